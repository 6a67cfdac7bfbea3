"""`python -m studies.bench compiled` times two writings of the same recurrence: they must agree (eager)."""
import torch

from studies.bench.compiled import _loop_functional, _loop_in_place


def test_functional_chunk_loop_is_the_in_place_loop_real_and_complex():
    gen = torch.Generator().manual_seed(0)
    a, b = torch.rand(7, 5, generator=gen), torch.randn(7, 5, generator=gen)
    torch.testing.assert_close(_loop_functional(a, b), _loop_in_place(a, b))
    ac = torch.polar(a, torch.randn(7, 5, generator=gen))
    bc = torch.complex(b, torch.randn(7, 5, generator=gen))
    expected = torch.stack([bc[0], ac[1] * bc[0] + bc[1]])
    torch.testing.assert_close(_loop_in_place(ac, bc)[:2], expected)
    torch.testing.assert_close(_loop_functional(ac, bc), _loop_in_place(ac, bc))
