"""Local heads g_l: trainable classifiers from the projection v_l to class logits."""

from torch import nn


def linear(proj_dim: int, num_classes: int) -> nn.Module:
    return nn.Linear(proj_dim, num_classes)


def mlp(proj_dim: int, num_classes: int) -> nn.Module:
    return nn.Sequential(nn.Linear(proj_dim, proj_dim), nn.ReLU(), nn.Linear(proj_dim, num_classes))


HEADS = {"linear": linear, "mlp": mlp}
