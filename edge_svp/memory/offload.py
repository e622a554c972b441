"""Parts of a network on disk while others train.

The layerwise schedule holds only the block in training, its objective and what makes its
reference (the input projection, or the previous block's fixed projection R_{l-1}); every
other block and every other part of an objective waits in a file, so that neither frozen nor untrained blocks count against the
budget, whatever the depth. A part on disk is a module whose tensors hold no data (the same
Parameter objects, emptied) and a checksummed file of its state dict.

    offload = OffloadedModules(net, directory)
    offload.keep_only({"blocks.1", "objectives.1", "objectives.0.projection"}, device)
    offload.manifest()         # for the checkpoint: what is on disk, with SHA-256 digests
    offload.bring_all_back(device)   # the whole network again

A checkpoint written meanwhile holds the resident tensors (`resident_state`) and the
manifest; `read_offloaded` brings the parts on disk back into its state dict (resume, eval,
export).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
from torch import nn

from edge_svp.errors import EdgeSVPError
from edge_svp.files import atomic_write, file_sha256


def weights_dir(cache_dir: Path) -> Path:
    """Where a run keeps the parts on disk: beside its activation caches."""
    return Path(cache_dir) / "weights"


class OffloadedModules:
    def __init__(self, net: nn.Module, directory: Path | None = None):
        """Files go to `directory` (kept for a resumed run), or to a temporary folder that
        goes with this object."""
        self.net = net
        self._temporary = (
            tempfile.TemporaryDirectory(prefix="edge-svp-") if directory is None else None
        )
        self.directory = Path(self._temporary.name if directory is None else directory)
        self.on_disk: dict[str, str] = {}  # module name -> SHA-256 of its file

    def path(self, name: str) -> Path:
        return self.directory / f"{name}.pt"

    def keep_only(self, names: set[str], device: torch.device) -> None:
        """Send every part of the network (blocks.i, each piece of objectives.i, the
        input_projection) not under `names` to disk, and bring those under them to
        `device`."""
        for name, module in _parts(self.net):
            if any(name == n or name.startswith(f"{n}.") for n in names):
                self._bring_back(name, module, device)
            else:
                self._send_away(name, module)

    def bring_all_back(self, device: torch.device) -> None:
        """The whole network on `device` again (a temporary folder goes)."""
        self.keep_only({name for name, _ in _parts(self.net)}, device)
        if self._temporary is not None:
            self._temporary.cleanup()

    def _send_away(self, name: str, module: nn.Module) -> None:
        if name in self.on_disk or not _has_tensors(module):
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        tensors = module.state_dict(keep_vars=True)
        state = {k: v.detach().cpu() for k, v in tensors.items()}
        self.on_disk[name] = atomic_write(self.path(name), lambda f: torch.save(state, f))
        for tensor in tensors.values():  # the same Parameter objects stay: optimizers, hooks
            tensor.data = tensor.data.new_empty(0)

    def _bring_back(self, name: str, module: nn.Module, device: torch.device) -> None:
        if name not in self.on_disk:
            module.to(device)
            return
        state = _read(self.path(name), self.on_disk[name], device)
        for key, tensor in module.state_dict(keep_vars=True).items():
            tensor.data = state[key]
        module.to(device)
        del self.on_disk[name]

    def manifest(self) -> list[dict]:
        return [{"module": name, "sha256": digest} for name, digest in self.on_disk.items()]


def _parts(net: nn.Module):
    """(name, module) of each part the layerwise schedule moves as a whole: every block, every
    piece of every objective (its projection, reference projection and head: the next block
    needs only the first), the input projection."""
    for name, child in net.named_children():
        if name == "objectives":
            for i, objective in enumerate(child):
                yield from ((f"{name}.{i}.{piece}", m) for piece, m in objective.named_children())
        elif isinstance(child, nn.ModuleList):
            yield from ((f"{name}.{i}", m) for i, m in enumerate(child))
        elif child is not None:
            yield name, child


def _has_tensors(module: nn.Module) -> bool:
    return any(True for _ in module.parameters()) or any(True for _ in module.buffers())


def _read(path: Path, digest: str, device) -> dict:
    if not path.exists():
        raise EdgeSVPError(f"the weights of {path.stem} are missing ({path})")
    if file_sha256(path) != digest:
        raise EdgeSVPError(f"{path} fails its checksum (truncated or corrupt)")
    return torch.load(path, map_location=device, weights_only=True)


def read_offloaded(state_dict: dict, manifest: list[dict], directory: Path) -> dict:
    """`state_dict` (a checkpoint's resident tensors) with the parts on disk read back in."""
    state = dict(state_dict)
    for entry in manifest:
        name = entry["module"]
        part = _read(directory / f"{name}.pt", entry["sha256"], "cpu")
        state.update({f"{name}.{key}": value for key, value in part.items()})
    return state


def resident_state(net: nn.Module, manifest: list[dict]) -> dict:
    """The state dict of what of `net` is in memory: the parts on disk are in `manifest`."""
    away = tuple(f"{entry['module']}." for entry in manifest)
    return {k: v for k, v in net.state_dict().items() if not k.startswith(away)}
