"""Small MLP building blocks: weight-normalised linear layers, the conditioned MLP with geometric
("sphere") initialisation (spec section 5.2), and the Lipschitz-bounded MLP (spec section 5.5).
"""

from __future__ import annotations

import itertools
import math

import torch
from torch import nn
from torch.nn.utils.parametrizations import weight_norm


def wn_linear(in_dim: int, out_dim: int, use_weight_norm: bool = True) -> nn.Linear:
    """A ``Linear(in_dim, out_dim)``, weight-normalised (``W = g v / |v|`` per output row) if asked.

    Initialise the plain layer first and call :func:`apply_weight_norm` afterwards so that the
    normalised parametrisation starts from the same weight.
    """
    layer = nn.Linear(in_dim, out_dim)
    return apply_weight_norm(layer) if use_weight_norm else layer


def apply_weight_norm(layer: nn.Linear) -> nn.Linear:
    """Weight normalisation via ``torch.nn.utils.parametrizations.weight_norm`` (dim 0 = rows)."""
    return weight_norm(layer, name="weight", dim=0)


def has_weight_norm(layer: nn.Module) -> bool:
    """Whether ``layer.weight`` is produced by a weight-norm parametrisation."""
    params = getattr(layer, "parametrizations", None)
    return params is not None and "weight" in params


def sphere_init_(layers: list[nn.Linear], n_xyz: int = 3, radius: float = 0.5) -> None:
    """Geometric initialisation (SAL/IDR) so that ``out[:, k] ~ |xyz| - radius`` for every output ``k``.

    * first layer: bias 0; the first ``n_xyz`` input columns (raw xyz) ~ ``N(0, sqrt(2)/sqrt(n_out))``,
      every other column (hash features, conditioning) 0;
    * middle layers: ``N(0, sqrt(2)/sqrt(n_out))``, bias 0;
    * last layer: ``N(sqrt(pi)/sqrt(n_in), 1e-4)``, bias ``-radius``.

    Args:
        layers: the plain (not yet weight-normalised) linear layers, input to output.
        n_xyz: how many leading input columns are the raw coordinates.
        radius: sphere radius in the units of those coordinates.
    """
    with torch.no_grad():
        for i, layer in enumerate(layers):
            n_out, n_in = layer.weight.shape
            if i == len(layers) - 1:
                layer.weight.normal_(math.sqrt(math.pi) / math.sqrt(n_in), 1e-4)
                layer.bias.fill_(-radius)
            elif i == 0:
                layer.weight.zero_()
                layer.weight[:, :n_xyz].normal_(0.0, math.sqrt(2.0) / math.sqrt(n_out))
                layer.bias.zero_()
            else:
                layer.weight.normal_(0.0, math.sqrt(2.0) / math.sqrt(n_out))
                layer.bias.zero_()


class ConditionedMLP(nn.Module):
    """MLP whose conditioning vector is concatenated to the input of layer 0.

    ``forward(x (N, in_dim), cond (N, cond_dim)) -> (N, out_dim)``. Hidden activation Softplus(beta)
    (``beta=None``: ReLU); no output activation.

    Args:
        in_dim: size of ``x`` (its first 3 columns are the raw xyz when ``sphere_init``).
        cond_dim: size of ``cond`` (0: no conditioning).
        out_dim: output size.
        hidden_dim, n_hidden_layers: width and number of hidden layers.
        softplus_beta: Softplus sharpness (``None`` for ReLU).
        use_weight_norm: weight-normalise every linear layer.
        sphere_init: geometric initialisation (:func:`sphere_init_`) with ``radius``.
    """

    def __init__(
        self,
        in_dim: int,
        cond_dim: int,
        out_dim: int,
        hidden_dim: int,
        n_hidden_layers: int,
        softplus_beta: float | None = 100.0,
        use_weight_norm: bool = True,
        sphere_init: bool = False,
        radius: float = 0.5,
    ):
        super().__init__()
        self.in_dim, self.cond_dim, self.out_dim = in_dim, cond_dim, out_dim
        dims = [in_dim + cond_dim] + [hidden_dim] * n_hidden_layers + [out_dim]
        layers = [nn.Linear(a, b) for a, b in itertools.pairwise(dims)]
        if sphere_init:
            sphere_init_(layers, n_xyz=3, radius=radius)
        else:
            for layer in layers:
                nn.init.zeros_(layer.bias)
        if use_weight_norm:
            layers = [apply_weight_norm(layer) for layer in layers]
        self.layers = nn.ModuleList(layers)
        self.act = nn.Softplus(beta=softplus_beta) if softplus_beta is not None else nn.ReLU()

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        h = x if cond is None or self.cond_dim == 0 else torch.cat([x, cond], dim=-1)
        for i, layer in enumerate(self.layers):
            h = layer(h)
            if i < len(self.layers) - 1:
                h = self.act(h)
        return h


class LipschitzLinear(nn.Module):
    """Linear layer with a learnable Lipschitz bound (PermutoSDF / Liu et al. 2022).

    At every forward ``W <- W * min(1, softplus(c) / sum_col |W_row|)`` row-wise; ``c`` starts at
    ``2 * max_row sum_col |W|`` (so the bound is inactive at initialisation).
    """

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.linear = nn.Linear(in_dim, out_dim)
        nn.init.zeros_(self.linear.bias)
        with torch.no_grad():
            bound = 2.0 * self.linear.weight.abs().sum(1).max()
        self.c = nn.Parameter(bound.reshape(()).clone())

    def bound(self) -> torch.Tensor:
        """``softplus(c)``: the layer's Lipschitz bound (infinity norm)."""
        return nn.functional.softplus(self.c)

    def normalized_weight(self) -> torch.Tensor:
        """The rescaled weight ``(out_dim, in_dim)``."""
        w = self.linear.weight
        row_sum = w.abs().sum(1, keepdim=True).clamp_min(1e-12)
        return w * torch.clamp(self.bound() / row_sum, max=1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.linear(x, self.normalized_weight(), self.linear.bias)


class LipschitzMLP(nn.Module):
    """ReLU MLP of :class:`LipschitzLinear` layers: ``(N, in_dim) -> (N, out_dim)`` (no output activation)."""

    def __init__(self, in_dim: int, out_dim: int, hidden_dim: int, n_hidden_layers: int):
        super().__init__()
        dims = [in_dim] + [hidden_dim] * n_hidden_layers + [out_dim]
        self.layers = nn.ModuleList(LipschitzLinear(a, b) for a, b in itertools.pairwise(dims))

    def lipschitz_bound(self) -> torch.Tensor:
        """``prod_i softplus(c_i)`` (exposed as a regulariser; the paper's loss does not use it)."""
        out = self.layers[0].c.new_ones(())
        for layer in self.layers:
            out = out * layer.bound()
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        for i, layer in enumerate(self.layers):
            h = layer(h)
            if i < len(self.layers) - 1:
                h = torch.relu(h)
        return h
