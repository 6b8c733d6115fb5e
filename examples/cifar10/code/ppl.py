"""The seed's CIFAR-10 pipeline handler, with only its imports changed, plus a batching variant.

Preprocessing is numpy (the tutorial's ToTensor + Normalize((0.5,)*3, (0.5,)*3)): no torchvision at inference.
"""

from pathlib import Path

import numpy as np
import torch

from builder.api.metric import multi_classification  # was: from starwhale.api.metric import multi_classification
from builder.api.model import PipelineHandler  # was: from starwhale.api.model import PipelineHandler

from .cnn import Net

ROOTDIR = Path(__file__).parent.parent
ONE_IMAGE_SIZE = 32 * 32 * 3


class CIFAR10Inference(PipelineHandler):
    """One record per ppl call, exactly like the seed."""

    def __init__(self, device="cpu") -> None:
        super().__init__(merge_label=True, ignore_error=True)
        self.device = torch.device(device)
        self.model = self._load_model(self.device)

    def ppl(self, data, **kw):
        data = self._pre(data)
        with torch.inference_mode():
            output = self.model(data)
        return self._post(output)

    def handle_label(self, label, **kw):
        return [int(l) for l in label]

    @multi_classification(
        confusion_matrix_normalize="all",
        show_hamming_loss=True,
        show_cohen_kappa_score=True,
        show_roc_auc=True,
        all_labels=[i for i in range(0, 10)],
    )
    def cmp(self, _data_loader):
        _result, _label, _pr = [], [], []
        for _data in _data_loader:
            _label.extend([int(l) for l in _data["label"]])
            _result.extend([int(l) for l in _data["result"]])
            _pr.extend([l for l in _data["pr"]])
        return _label, _result, _pr

    def _pre(self, input: bytes):
        images = np.frombuffer(input, dtype=np.uint8).reshape(-1, 3, 32, 32)
        images = (images.astype(np.float32) / 255.0 - 0.5) / 0.5
        return torch.from_numpy(images).to(self.device)

    def _post(self, input):
        pred_value = input.argmax(1).flatten().tolist()
        probability_matrix = np.exp(input.tolist()).tolist()
        return pred_value, probability_matrix

    def _load_model(self, device):
        model = Net().to(device)
        model.load_state_dict(torch.load(str(ROOTDIR / "models/cifar_net.pth"), map_location=device, weights_only=True))
        model.eval()
        print("load cifar_net model, start to inference...")
        return model


class CIFAR10BatchInference(CIFAR10Inference):
    """Opts in to batching: ppl gets a list of records and returns one (pred, scores) pair per record.

    Each per-record output keeps the seed's shapes (``[pred]``, ``[[10 scores]]``), so the same cmp reads both.
    """

    def __init__(self, device="cpu", batch_size=256) -> None:
        PipelineHandler.__init__(self, merge_label=True, ignore_error=True, batch_size=batch_size)
        self.device = torch.device(device)
        self.model = self._load_model(self.device)

    def ppl(self, data, **kw):
        images = self._pre(b"".join(data))
        with torch.inference_mode():
            output = self.model(images)
        preds = output.argmax(1).tolist()
        scores = np.exp(output.cpu().numpy().astype(np.float64)).tolist()  # one C-level conversion per batch
        return [([p], [s]) for p, s in zip(preds, scores)]
