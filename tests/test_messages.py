"""The commands' one voice: the resume command, exit statuses, program names."""

import shlex
import signal

import pytest

from keras_cifar_resnet import messages
from keras_cifar_resnet.backend_choice import BackendError
from keras_cifar_resnet.config import UsageError, build_parser
from keras_cifar_resnet.data.cifar10 import DataError
from keras_cifar_resnet.reporting.model_files import ModelFileError
from keras_cifar_resnet.training.checkpoints import CheckpointError


def test_the_resume_command_survives_a_shell(tmp_path):
    folder = tmp_path / "runs/my run; rm -rf ~"
    command = messages.resume_command(folder, "--from-previous-checkpoint")
    assert shlex.split(command) == [
        "keras-cifar-resnet-train",
        "--resume",
        str(folder),
        "--from-previous-checkpoint",
    ]


def test_every_line_that_gives_the_command_quotes_it(tmp_path):
    folder = tmp_path / "my run"
    for line in (
        messages.already_holds_a_run(folder),
        messages.lost_process("process 1 was lost", folder),
        messages.stopped(signal.SIGTERM, "after epoch 1", folder / "c.npz", folder),
        messages.previous_checkpoint_advice(
            folder, folder / "c.npz", folder / "p.npz", {"epoch": 1, "step": 0}, True
        ),
        messages.previous_checkpoint_advice(
            folder, folder / "c.npz", folder / "p.npz", None, False
        ),
    ):
        assert shlex.quote(str(folder)) in line, line


def test_a_stop_says_whether_it_was_during_an_epoch_or_after_it():
    assert messages.stop_position(0, 14, 175) == "during epoch 1, at step 14/175"
    assert messages.stop_position(2, 0, 175) == "after epoch 2"


def test_printable_escapes_control_characters_and_replaces_undecodable_bytes():
    name = "cat\x1b]0;owned\x07\r\x9b.png"
    assert messages.printable(name) == "cat\\x1b]0;owned\\x07\\r\\x9b.png"
    undecodable = b"caf\xe9.png".decode("utf-8", "surrogateescape")
    assert messages.printable(undecodable) == "caf\ufffd.png"
    # Any encoding can write the result (no lone surrogates left).
    messages.printable(undecodable).encode("utf-8")
    assert messages.printable("accents é ok") == "accents é ok"


def test_messages_import_nothing_of_the_package():
    import ast
    import inspect

    tree = ast.parse(inspect.getsource(messages))
    imported = [
        node.module if isinstance(node, ast.ImportFrom) else alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    ]
    assert not [name for name in imported if name and "keras_cifar_resnet" in name]


@pytest.mark.parametrize(
    "error, status",
    [
        (UsageError("bad flag"), 2),
        (BackendError("no such backend", usage=True), 2),
        (BackendError("not installed", usage=False), 1),
        (ModelFileError("not a .keras file", usage=True), 2),
        (ModelFileError("corrupt", usage=False), 1),
        (DataError("missing"), 1),
        (CheckpointError("damaged"), 1),
        (OSError("disk full"), 1),
        (KeyboardInterrupt(), 128 + signal.SIGINT),
    ],
)
def test_one_rule_maps_failures_to_exit_statuses(error, status):
    assert messages.exit_status(error) == status


def test_distribution_failures_keep_their_statuses():
    from keras_cifar_resnet.errors import DistributionError, LostProcessError

    assert messages.exit_status(DistributionError("one device")) == 2
    assert messages.exit_status(LostProcessError("process lost")) == 1


def test_each_command_has_one_name():
    assert build_parser().prog == messages.PROGRAMS["train"]
    from keras_cifar_resnet import evaluate, predict

    assert evaluate.build_parser().prog == messages.PROGRAMS["evaluate"]
    assert predict.build_parser().prog == messages.PROGRAMS["predict"]
    error = UsageError("bad flag")
    assert messages.failure("keras-cifar-resnet-train", error).startswith(
        "keras-cifar-resnet-train: error: "
    )
    assert messages.failure("keras-cifar-resnet-train", DataError("x")) == "error: x"
