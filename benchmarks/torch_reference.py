"""The anchor: the same ResNet and training step in plain PyTorch.

Exactly the network of `keras_cifar_resnet.models` (a test checks the
parameter counts and, with Keras's weights copied in, the logits), in
Keras's conventions: `2 * x / 255 - 1` inside the model on NHWC uint8
images, conv biases, BatchNorm eps 1e-3 and momentum `1 - m`, TensorFlow's
"same" padding. The step and its variants: benchmarks/README.md.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from benchmarks.harness import RECIPE, StepRunner, synthetic_batches
from keras_cifar_resnet.models import ARCHITECTURES
from keras_cifar_resnet.network.conv import same_padding
from keras_cifar_resnet.training.precision_support import accelerator_present

BATCH_NORM_EPSILON = 1e-3
# As keras_cifar_resnet.data.augment.CUTOUT_FILL (importing that module first
# trips the package's registration): mid grey, the model's 0.
CUTOUT_FILL = 127.5
# torch's BatchNorm2d attribute: the Keras weight it holds.
BATCH_NORM_WEIGHTS = (
    ("weight", "gamma"),
    ("bias", "beta"),
    ("running_mean", "moving_mean"),
    ("running_var", "moving_variance"),
)


class SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow's "same" padding, asymmetric where it must be."""

    def forward(self, x):
        kernel, stride = self.kernel_size[0], self.stride[0]
        top, bottom = same_padding(x.shape[-2], kernel, stride)
        left, right = same_padding(x.shape[-1], kernel, stride)
        if top == bottom and left == right:
            return F.conv2d(x, self.weight, self.bias, stride, (top, left))
        return F.conv2d(
            F.pad(x, (left, right, top, bottom)), self.weight, self.bias, stride
        )


def batch_norm(channels, keras_momentum):
    return nn.BatchNorm2d(
        channels, eps=BATCH_NORM_EPSILON, momentum=1.0 - keras_momentum
    )


class BasicBlock(nn.Module):
    def __init__(self, in_channels, filters, stride, batch_norm_momentum):
        super().__init__()
        self.conv1 = SameConv2d(in_channels, filters, 3, stride=stride)
        self.bn1 = batch_norm(filters, batch_norm_momentum)
        self.conv2 = SameConv2d(filters, filters, 3)
        self.bn2 = batch_norm(filters, batch_norm_momentum)
        # As the reference: a strided 1x1 conv (valid, no BN) when the block
        # strides, the identity otherwise (the channels then match).
        self.shortcut = (
            nn.Conv2d(in_channels, filters, 1, stride=stride)
            if stride != 1
            else nn.Identity()
        )

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(self.shortcut(x) + out)


class TorchResNet(nn.Module):
    """The package's ResNet in plain PyTorch; NHWC uint8 (or float) images in.

    `batch_norm_momentum` is in Keras's convention (the old statistics'
    weight); `width_multiplier` scales filters as `ResNet(width_multiplier=)`.
    """

    def __init__(
        self,
        model_name="resnet18",
        num_classes=10,
        batch_norm_momentum=0.99,
        width_multiplier=1.0,
    ):
        super().__init__()

        def scaled(filters):
            return max(1, round(filters * width_multiplier))

        stem = scaled(ARCHITECTURES[model_name]["stem_filters"])
        self.stem_conv = nn.Conv2d(3, stem, 3)  # valid padding
        self.stem_bn = batch_norm(stem, batch_norm_momentum)
        blocks, channels = [], stem
        for num_blocks, filters, stride in ARCHITECTURES[model_name]["stages"]:
            for index in range(num_blocks):
                blocks.append(
                    BasicBlock(
                        channels,
                        scaled(filters),
                        stride if index == 0 else 1,
                        batch_norm_momentum,
                    )
                )
                channels = scaled(filters)
        self.blocks = nn.Sequential(*blocks)
        self.logits = nn.Linear(channels, num_classes)

    def forward(self, images):
        # NHWC -> NCHW once; the memory format of the rest follows the
        # module's (channels_last keeps NHWC strides underneath).
        x = images.permute(0, 3, 1, 2).float() * (2.0 / 255.0) - 1.0
        if self.stem_conv.weight.is_contiguous(memory_format=torch.channels_last):
            x = x.contiguous(memory_format=torch.channels_last)
        else:
            x = x.contiguous()
        x = F.relu(self.stem_bn(self.stem_conv(x)))
        # TensorFlow's "same" for a 2x2 stride-1 pool: one -inf row/column
        # after, none before.
        x = F.max_pool2d(F.pad(x, (0, 1, 0, 1), value=float("-inf")), 2, stride=1)
        x = self.blocks(x)
        return self.logits(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def keras_initialization(module):
    """Glorot-uniform kernels and zero biases, as Keras initialises the model.

    (torch's own defaults draw 3x3 conv kernels about sqrt(3) times smaller.)
    """
    for layer in module.modules():
        if isinstance(layer, (nn.Conv2d, nn.Linear)):
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)
    return module


def parameter_counts(module):
    """(trainable, non_trainable) as Keras counts them (moving mean and variance)."""
    trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
    moving = sum(
        b.numel()
        for name, b in module.named_buffers()
        if name.endswith(("running_mean", "running_var"))
    )
    return trainable, moving


def augment(images, config, generator=None):
    """`keras_cifar_resnet.Augmentation`'s crop, flip and cutout on an NHWC batch,
    as `config` (a `TrainConfig`) sets them.

    The same operations, not the same random draws: `generator` (a
    `torch.Generator` on the images' device), else torch's global one.
    """
    n, h, w, _ = images.shape
    device = images.device
    random = {"device": device, "generator": generator}
    images = images.float()
    if config.crop_padding:
        p = config.crop_padding
        padded = F.pad(images, (0, 0, p, p, p, p))
        offset_y = torch.randint(0, 2 * p + 1, (n,), **random)
        offset_x = torch.randint(0, 2 * p + 1, (n,), **random)
        rows = (offset_y[:, None] + torch.arange(h, device=device))[:, :, None]
        cols = (offset_x[:, None] + torch.arange(w, device=device))[:, None, :]
        batch = torch.arange(n, device=device)[:, None, None]
        images = padded[batch, rows, cols]
    if config.flip:
        flips = torch.rand(n, **random) < 0.5
        images = torch.where(flips[:, None, None, None], images.flip(2), images)
    size = config.cutout_size
    if size:
        half = size // 2
        centre_y = torch.randint(0, h, (n, 1), **random)
        centre_x = torch.randint(0, w, (n, 1), **random)
        rows = torch.arange(h, device=device)[None, :] - centre_y
        cols = torch.arange(w, device=device)[None, :] - centre_x
        inside_rows = (rows >= -half) & (rows < size - half)
        inside_cols = (cols >= -half) & (cols < size - half)
        inside = inside_rows[:, :, None] & inside_cols[:, None, :]
        images = images.masked_fill(inside[..., None], CUTOUT_FILL)
    return images


def make_optimizer(module, config):
    """The config's Nesterov SGD, decay on conv/dense weights only (the L2 term)."""
    groups = {True: [], False: []}
    for name, p in module.named_parameters():
        groups[name.endswith("weight") and p.dim() > 1].append(p)
    return torch.optim.SGD(
        [
            {"params": groups[True], "weight_decay": config.weight_decay},
            {"params": groups[False], "weight_decay": 0.0},
        ],
        lr=config.learning_rate,
        momentum=config.momentum,
        nesterov=True,
    )


class NativeTorchStep(StepRunner):
    """The native step with the same interface as `harness.KerasTrainStep`:
    the same batches and recipe, in the variant's layout, precision and
    compilation."""

    def __init__(
        self,
        model_name,
        batch_size,
        precision,
        channels_last,
        compile,
        width_multiplier=1.0,
    ):
        self.device = torch.device("cuda" if accelerator_present("torch") else "cpu")
        self.batch_size = batch_size
        self.model = TorchResNet(
            model_name,
            batch_norm_momentum=RECIPE.batch_norm_momentum,
            width_multiplier=width_multiplier,
        ).to(self.device)
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.model.train()
        self.optimizer = make_optimizer(self.model, RECIPE)
        self.autocast = precision == "mixed"
        self.batches = [
            (
                torch.from_numpy(x).to(self.device),
                torch.from_numpy(y).long().to(self.device),
            )
            for x, y in synthetic_batches(batch_size)
        ]
        wrap = torch.compile if compile else (lambda function: function)
        self._step, self._predict = wrap(self._eager_step), wrap(self._eager_predict)

    def _autocast(self):
        return torch.autocast(
            self.device.type, dtype=torch.bfloat16, enabled=self.autocast
        )

    def _eager_step(self, images, labels):
        self.optimizer.zero_grad(set_to_none=True)
        with self._autocast():
            logits = self.model(augment(images, RECIPE))
        loss = F.cross_entropy(
            logits.float(), labels, label_smoothing=RECIPE.label_smoothing
        )
        loss.backward()
        self.optimizer.step()
        return loss.detach()

    def _eager_predict(self, images):
        with torch.no_grad(), self._autocast():
            return self.model(images)

    def _sync(self, tensor):
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        return float(tensor.float().ravel()[0])

    def run(self, steps):
        self.model.train()
        for _ in range(steps):
            loss = self._step(*self._batch())
        return self._sync(loss)

    def predict(self, steps):
        self.model.eval()
        for _ in range(steps):
            logits = self._predict(self._batch()[0])
        value = self._sync(logits)
        self.model.train()
        return value


def load_keras_weights(module, keras_model):
    """Copies a Keras `ResNet`'s weights into `module` (names line up)."""
    weights = {w.path: np.asarray(w.numpy()) for w in keras_model.weights}
    prefix = keras_model.name + "/"
    weights = {
        k[len(prefix) :] if k.startswith(prefix) else k: v for k, v in weights.items()
    }

    def copy(target, pairs):
        for attribute, array in pairs:
            getattr(target, attribute).data = torch.from_numpy(array.copy())

    def conv(target, name):
        kernel = weights[f"{name}/kernel"].transpose(3, 2, 0, 1)  # to (out, in, h, w)
        copy(target, (("weight", kernel), ("bias", weights[f"{name}/bias"])))

    def bn(target, name):
        copy(target, ((a, weights[f"{name}/{k}"]) for a, k in BATCH_NORM_WEIGHTS))

    conv(module.stem_conv, "stem_conv")
    bn(module.stem_bn, "stem_bn")
    stage_blocks = keras_model.stackwise_num_blocks
    blocks = iter(module.blocks)
    for stage, num_blocks in enumerate(stage_blocks, start=1):
        for index in range(1, num_blocks + 1):
            block, name = next(blocks), f"stage{stage}_block{index}"
            conv(block.conv1, f"{name}_conv1")
            bn(block.bn1, f"{name}_bn1")
            conv(block.conv2, f"{name}_conv2")
            bn(block.bn2, f"{name}_bn2")
            if isinstance(block.shortcut, nn.Conv2d):
                conv(block.shortcut, f"{name}_shortcut_conv")
    logits = (("weight", weights["logits/kernel"].T), ("bias", weights["logits/bias"]))
    copy(module.logits, logits)
    return module
