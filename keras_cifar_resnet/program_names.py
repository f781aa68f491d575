"""Each command's one name: its installed script, its usage and its error lines.

A floor below everything (imports nothing of the package), so that the
parsers in `config` and the lines in `messages` read the same names.
"""

PROGRAMS = {
    "train": "keras-cifar-resnet-train",
    "evaluate": "keras-cifar-resnet-evaluate",
    "predict": "keras-cifar-resnet-predict",
}
