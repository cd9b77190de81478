"""The connectors' two-layer GELU MLPs (LLaVA-1.5's projector), for tokens and for maps."""

from __future__ import annotations

from torch import Tensor, nn

__all__ = ["MapProjector", "mlp_projector"]


def mlp_projector(dim_in: int, dim_out: int) -> nn.Sequential:
    """Linear -> GELU -> Linear, applied to the last dimension.

    Args:
        dim_in: The input width.
        dim_out: The output width (also the hidden width).

    Returns:
        The two-layer MLP.
    """
    return nn.Sequential(nn.Linear(dim_in, dim_out), nn.GELU(), nn.Linear(dim_out, dim_out))


class MapProjector(nn.Module):
    """:func:`mlp_projector` applied to every cell of a ``B×C×H×W`` map, keeping the layout.

    Args:
        dim_in: The channels of the input map.
        dim_out: The channels of the output map.
    """

    def __init__(self, dim_in: int, dim_out: int) -> None:
        super().__init__()
        self.mlp = mlp_projector(dim_in, dim_out)

    def forward(self, x: Tensor) -> Tensor:
        """Project every cell of a map.

        Args:
            x: The map, ``B×dim_in×H×W``.

        Returns:
            The projected map, ``B×dim_out×H×W``.
        """
        return self.mlp(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
