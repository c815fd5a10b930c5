"""The ImageNet-quality prior against the published SFDA table."""

import json

import numpy as np
import pytest
from scipy.stats import weightedtau

from task2vec.backbones.quality import TORCHVISION_TOP1, imagenet_top1


def test_top1_lookup(shared):
    table = shared / "reference" / "timm-results-imagenet.csv"
    assert imagenet_top1("resnet50.tv2_in1k", 224, table) == pytest.approx(80.846)
    assert imagenet_top1("resnet152", 224, table) == pytest.approx(78.312)  # torchvision's figure for its weights
    assert imagenet_top1("wide_resnet50_2", 224, table) == pytest.approx(78.486)  # -> wide_resnet50_2.tv_in1k
    assert imagenet_top1("mobilenet_v2", None, table) == TORCHVISION_TOP1["mobilenet_v2"]  # not in timm's table
    assert imagenet_top1("no_such_model", None, table) is None


def test_top1_alone_ranks_sfda_models_like_the_published_baseline(shared):
    """Ranking by ImageNet top-1 reaches a mean weighted Kendall tau of about 0.65 on SFDA group 1."""
    table = json.loads((shared / "reference" / "sfda_group1_finetune_acc.json").read_text())
    taus = []
    for target, accs in table.items():
        models = sorted(accs)
        top1 = [imagenet_top1(m, None, shared / "reference" / "timm-results-imagenet.csv") for m in models]
        assert None not in top1, target
        taus.append(weightedtau(top1, [accs[m] for m in models])[0])
    assert len(taus) == 11
    assert np.mean(taus) == pytest.approx(0.654, abs=0.005)
