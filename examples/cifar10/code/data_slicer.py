import pickle
from pathlib import Path

from builder.api.dataset import BuildExecutor  # was: from starwhale.api.dataset import BuildExecutor


def unpickle(file):
    with open(file, 'rb') as fo:
        content_dict = pickle.load(fo, encoding='bytes')
    return content_dict


class CIFAR10Slicer(BuildExecutor):
    """Records of the CIFAR-10 python batches: data = one 3072-byte row (3x32x32), label = one byte."""

    def label_names(self):
        """The class names from ``batches.meta``, which sits beside the batches sliced (``cifar-10-batches-py/``)."""
        folder = getattr(self, "_batches_dir", None)
        if folder is None or not (folder / "batches.meta").is_file():
            return None
        names = unpickle(folder / "batches.meta").get(b'label_names')
        return [n.decode() if isinstance(n, bytes) else n for n in names] if names else None

    def iter_data_slice(self, path: str):
        content_dict = unpickle(path)
        data_numpy = content_dict.get(b'data')
        idx = 0
        data_size = len(data_numpy)
        while True:
            last_idx = idx
            idx += 1
            if idx > data_size:
                break
            yield data_numpy[last_idx:idx].tobytes()

    def iter_label_slice(self, path: str):
        self._batches_dir = Path(path).parent
        content_dict = unpickle(path)
        labels_list = content_dict.get(b'labels')
        idx = 0
        data_size = len(labels_list)
        while True:
            last_idx = idx
            idx += 1
            if idx > data_size:
                break
            yield bytes(labels_list[last_idx:idx])
