"""avitalk.dropout: nn.Dropout's behaviour from a quarter of the random numbers."""

import torch
from torch import nn

from avitalk.dropout import Dropout, cheap_dropouts, dropout


def test_dropout_zeroes_p_of_the_elements_and_keeps_the_expectation():
    torch.manual_seed(0)
    x = torch.ones(400, 1001)  # an odd size: the last 64-bit draw is used in part
    for p in (0.05, 0.1, 0.5):
        y = dropout(x, p)
        assert abs(float((y == 0).float().mean()) - p) < 0.005
        assert abs(float(y.mean()) - 1.0) < 0.01
        assert torch.allclose(torch.unique(y), torch.tensor([0.0, 1.0 / (1.0 - p)]))
    # no pattern: neighbouring elements (from the same 64-bit draw) are dropped independently
    y = dropout(torch.ones(1_000_000), 0.5).view(-1, 4) == 0
    assert abs(float((y[:, 0] & y[:, 1]).float().mean()) - 0.25) < 0.005


def test_dropout_is_seeded_masks_gradients_and_is_identity_in_eval():
    d = Dropout(0.3)
    x = torch.randn(8, 16, requires_grad=True)
    torch.manual_seed(1)
    a = d(x)
    torch.manual_seed(1)
    assert torch.equal(a, d(x))
    a.sum().backward()
    assert torch.equal(x.grad == 0, a == 0)
    assert torch.equal(d.eval()(x), x)


def test_cheap_dropouts_replaces_torch_dropout_and_keeps_the_weights():
    layer = nn.TransformerEncoderLayer(16, 2, 32, 0.2, batch_first=True)
    keys = set(layer.state_dict())
    cheap_dropouts(layer)
    assert set(layer.state_dict()) == keys
    subs = [m for m in layer.modules() if isinstance(m, (nn.Dropout, Dropout))]
    assert len(subs) == 3 and all(type(m) is Dropout and m.p == 0.2 for m in subs)
