"""The PyTorch modules whose state dicts `trainer export --out FILE.safetensors` writes and
`trainer evaluate|predict --model FILE.safetensors` / `trainer train --init-from` read.

Both take pixels [N, 1, 28, 28] scaled to [0, 1] (byte / 255) and return logits [N, 10];
softmax(logits, 1) are the probabilities trainer reports.

    import safetensors.torch, torch
    from torch_modules import MLP, CNN
    model = MLP(hidden=(30, 10))    # or CNN()
    model.load_state_dict(safetensors.torch.load_file("model.safetensors"), strict=True)
"""
import torch
import torch.nn.functional as F
from torch import nn


class MLP(nn.Module):
    """The article's network for hidden=(30, 10): Flatten, Linear + ReLU per hidden width,
    a last Linear to 10; the layers are fc1, fc2, … (trainer --model mlp --hidden 30,10)."""

    def __init__(self, hidden=(30, 10)):
        super().__init__()
        widths = [784, *hidden, 10]
        self.depth = len(widths) - 1
        for i in range(self.depth):
            setattr(self, f"fc{i + 1}", nn.Linear(widths[i], widths[i + 1]))

    def forward(self, x):
        x = x.flatten(1)
        for i in range(1, self.depth + 1):
            x = getattr(self, f"fc{i}")(x)
            if i < self.depth:
                x = F.relu(x)
        return x


class CNN(nn.Module):
    """trainer --model cnn: three [3x3 conv (padding 1), ReLU, 2x2 max-pool] blocks with
    16/32/64 channels, then Linear(576, 128) + ReLU and Linear(128, 10)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.conv3 = nn.Conv2d(32, 64, 3, padding=1)
        self.fc1 = nn.Linear(64 * 3 * 3, 128)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x):
        for conv in (self.conv1, self.conv2, self.conv3):
            x = F.max_pool2d(F.relu(conv(x)), 2)
        return self.fc2(F.relu(self.fc1(x.flatten(1))))
