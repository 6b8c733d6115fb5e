"""How much a store takes on disk: each inode once, so a hard link is no second copy."""

from __future__ import annotations

import os


def disk_bytes(*folders, allocated: bool = False) -> int:
    """Bytes of the files under ``folders`` (their sizes, or with ``allocated`` the blocks they take), each inode
    counted once across all of them."""
    seen, total = set(), 0
    for base, _, files in (walked for folder in folders for walked in os.walk(folder)):
        for name in files:
            try:
                st = os.lstat(os.path.join(base, name))
            except FileNotFoundError:  # removed while it was walked
                continue
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_blocks * 512 if allocated else st.st_size
    return total
