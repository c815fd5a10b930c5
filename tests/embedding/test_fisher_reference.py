"""The per-filter Fisher engine against a brute-force, sample-by-sample autograd reference."""

import pytest
import torch
from torch import nn

from task2vec.embedding.fisher import FisherAccumulator, label_directions


class TinyNet(nn.Module):
    """Every layer kind the engine handles: timm's dynamic-'SAME' conv, padding='same', dense,
    strided+dilated, depthwise (x2 multiplier), grouped and 1x1 convolutions, a Linear over
    tokens and a flat Linear."""

    def __init__(self):
        super().__init__()
        from timm.layers import Conv2dSame

        self.c0 = Conv2dSame(3, 4, 4, stride=2)  # asymmetric dynamic padding
        self.same = nn.Conv2d(4, 3, 3, padding="same", padding_mode="reflect")
        self.c1 = nn.Conv2d(3, 8, 3, stride=1, padding=1)
        self.c2 = nn.Conv2d(8, 8, 3, padding=2, dilation=2, bias=False)
        self.dw = nn.Conv2d(8, 16, 3, padding=1, groups=8, bias=False)
        self.gc = nn.Conv2d(16, 8, 3, stride=2, padding=1, groups=4)
        self.pw = nn.Conv2d(8, 12, 1)
        self.tok = nn.Linear(12, 10)
        self.fc = nn.Linear(10, 6)

    def forward(self, x):
        x = torch.tanh(self.same(torch.relu(self.c0(x))))
        x = torch.relu(self.c1(x))
        x = torch.tanh(self.c2(x))
        x = torch.relu(self.dw(x))
        x = torch.relu(self.gc(x))
        x = self.pw(x)  # (B, 12, 4, 4)
        x = torch.tanh(self.tok(x.flatten(2).transpose(1, 2)))  # tokens (B, 16, 10)
        return self.fc(x.mean(1))


def layers(net):
    return [(n, m) for n, m in net.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def brute_force(net, head, x, labels, method):
    """sum_c w_c (dlog p_c/dw)^2 sample by sample, averaged per filter."""
    params = [m.weight for _, m in layers(net)]
    total = [torch.zeros(p.shape[0], dtype=torch.float64) for p in params]
    for b in range(len(x)):
        logp = torch.log_softmax(head(net(x[b:b + 1])), 1)[0]
        p = logp.exp().detach()
        pairs = [(int(labels[b]), 1.0)] if method == "empirical" else [(c, float(p[c])) for c in range(len(p))]
        for c, w in pairs:
            grads = torch.autograd.grad(logp[c], params, retain_graph=True)
            for t, g in zip(total, grads):
                t += w * g.double().flatten(1).square().sum(1)
    return torch.cat([t / (len(x) * p[0].numel()) for t, p in zip(total, params)])


@pytest.fixture
def setup():
    torch.manual_seed(0)
    net = TinyNet().double()
    head = nn.Linear(6, 5).double()
    x = torch.randn(7, 3, 31, 31, dtype=torch.float64)  # odd size: 'SAME' pads asymmetrically
    labels = torch.randint(0, 5, (7,))
    return net, head, x, labels


@pytest.mark.parametrize("method", ["exact", "empirical"])
def test_per_filter_fisher_matches_autograd(setup, method):
    net, head, x, labels = setup
    ref = brute_force(net, head, x, labels, method)
    for p in net.parameters():
        p.requires_grad_(False)
    acc = FisherAccumulator(layers(net), method, n_groups=2)
    acc.update(net, head, x[:4], labels[:4], torch.tensor([0, 1, 0, 1]))
    acc.update(net, head, x[4:], labels[4:], torch.tensor([1, 0, 1]))
    got = acc.fisher().double()
    assert got.shape == ref.shape == (4 + 3 + 8 + 8 + 16 + 8 + 12 + 10 + 6,)
    rel = ((got - ref).abs() / ref.abs().clamp_min(1e-30)).max()
    assert rel < 1e-4, f"max relative error {rel:.2e}"
    assert acc.mass_captured == pytest.approx(1.0)


def test_eigen_directions_reproduce_label_expectation():
    torch.manual_seed(1)
    logits = torch.randn(4, 7, dtype=torch.float64) * 2
    d = label_directions(logits, torch.zeros(4, dtype=torch.long), "exact")
    M = sum(v.unsqueeze(2) * v.unsqueeze(1) for v in d.vectors)
    p = torch.softmax(logits, 1)
    assert len(d.vectors) == 6  # rank C-1
    torch.testing.assert_close(M, torch.diag_embed(p) - p.unsqueeze(2) * p.unsqueeze(1))


def test_truncated_rank_reports_captured_mass():
    torch.manual_seed(2)
    logits = torch.randn(3, 50, dtype=torch.float64)
    d = label_directions(logits, torch.zeros(3, dtype=torch.long), "exact", max_rank=5)
    assert len(d.vectors) == 5
    assert ((d.captured > 0) & (d.captured < 1)).all()


def test_montecarlo_converges_to_exact(setup):
    net, head, x, labels = setup
    for p in net.parameters():
        p.requires_grad_(False)
    exact = FisherAccumulator(layers(net), "exact")
    exact.update(net, head, x, labels)
    ref = exact.fisher()
    errors = []
    for samples in (1, 16, 256):
        gen = torch.Generator().manual_seed(0)
        mc = FisherAccumulator(layers(net), "montecarlo", samples_per_image=samples, generator=gen)
        mc.update(net, head, x, labels)
        errors.append(float((mc.fisher() - ref).norm() / ref.norm()))
    assert errors[2] < errors[0] and errors[2] < 0.1, errors


def test_cpu_slices_give_the_whole_batch_result(setup):
    net, head, x, labels = setup
    for p in net.parameters():
        p.requires_grad_(False)
    groups = torch.tensor([0, 1, 0, 1, 1, 0, 1])
    whole = FisherAccumulator(layers(net), "exact", n_groups=2, cpu_slice_pixels=None)
    whole.update(net, head, x, labels, groups)
    sliced = FisherAccumulator(layers(net), "exact", n_groups=2, cpu_slice_pixels=2 * 31 * 31)  # 2 images a slice
    sliced.update(net, head, x, labels, groups)
    assert torch.equal(sliced.counts, whole.counts)
    for g in (None, 0, 1):
        torch.testing.assert_close(sliced.fisher(g), whole.fisher(g), rtol=1e-6, atol=0)  # float32 kernels
