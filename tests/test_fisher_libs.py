"""The exact per-filter Fisher against BackPACK's DiagGGNExact on a random-init ResNet-18 (CPU).

For the cross-entropy of a softmax head, the generalised Gauss-Newton is the Fisher of the
model's own label distribution, so BackPACK's diagonal, summed per filter, must equal ours.
(benchmarks/bench_fisher_libs.py runs the same check, with nngeometry and timings, on real probes.)
"""

import pytest
import torch
from torch import nn

backpack = pytest.importorskip("backpack")
torchvision = pytest.importorskip("torchvision")

from task2vec.fisher import FisherAccumulator  # noqa: E402


@pytest.fixture(scope="module")
def resnet():
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        body = torchvision.models.resnet18(num_classes=10)
        body.fc = nn.Identity()
        head = nn.Linear(512, 5)
        with torch.no_grad():
            head.weight.mul_(20)  # spread the logits: a non-uniform label distribution
        x = torch.randn(3, 3, 32, 32)
    body, head = body.eval().requires_grad_(False), head.requires_grad_(False)  # float32, as the probe runs
    return body, head, x


def test_exact_fisher_equals_backpack_diag_ggn(resnet):
    from backpack.extensions import DiagGGNExact

    body, head, x = resnet
    layers = [(n, m) for n, m in body.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    acc = FisherAccumulator(layers, "exact", max_rank=None)
    acc.update(body, head, x, torch.zeros(len(x), dtype=torch.long))
    ours = acc.fisher().double()

    net = backpack.extend(nn.Sequential(body, head), use_converter=True)  # the converter handles the skips
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            m.weight.requires_grad_(True)
    loss = backpack.extend(nn.CrossEntropyLoss(reduction="sum"))(net(x), torch.zeros(len(x), dtype=torch.long))
    with backpack.backpack(DiagGGNExact()):
        loss.backward()
    probe_layers = [m for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))][:-1]  # head dropped
    theirs = torch.cat([m.weight.diag_ggn_exact.flatten(1).sum(1) / (len(x) * m.weight[0].numel())
                        for m in probe_layers])
    assert ours.shape == theirs.shape == (4800,)
    live = theirs > 0  # a few filters of a random-init net see only dead ReLUs: both must give 0 there
    assert live.float().mean() > 0.5 and (ours[~live] == 0).all()
    rel = ((ours - theirs).abs()[live] / theirs[live]).max()
    assert rel < 1e-5, f"max relative difference {rel:.2e}"
