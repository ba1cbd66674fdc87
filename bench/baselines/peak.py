"""The peak GPU memory a baseline script allocated while it ran (None on a CPU)."""


def peak_gpu_mb():
    import torch

    return round(torch.cuda.max_memory_allocated() / 2**20, 1) if torch.cuda.is_available() else None
