import pickle

from builder.api.dataset import BuildExecutor  # was: from starwhale.api.dataset import BuildExecutor


def unpickle(file):
    with open(file, 'rb') as fo:
        content_dict = pickle.load(fo, encoding='bytes')
    return content_dict


class CIFAR10Slicer(BuildExecutor):

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
