"""DeepWeightFlow's flow: flow matching recovers a known distribution, and the ODE solver is exact where it must be."""

from __future__ import annotations

import torch

from generators.dwf.flow import VelocityMLP, cfm_loss, solve


def _mixture(n: int, generator: torch.Generator) -> torch.Tensor:
    centers = torch.tensor([[2.0, 2.0], [-2.0, 2.0], [2.0, -2.0], [-2.0, -2.0]])
    return centers[torch.randint(0, 4, (n,), generator=generator)] + 0.1 * torch.randn(n, 2, generator=generator)


def test_flow_matching_recovers_a_2d_mixture():
    """Samples of a flow fitted to 4 equal Gaussian modes land on the modes, in equal shares (seeded)."""
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    model = VelocityMLP(2, hidden=64, time_dim=16, dropout=0.0)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, 600)
    for _ in range(600):
        loss = cfm_loss(model, _mixture(256, gen), source_std=1.0, generator=gen)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    model.eval()
    x = solve(model, torch.randn(4000, 2, generator=gen), steps=50, method="midpoint")
    centers = torch.tensor([[2.0, 2.0], [-2.0, 2.0], [2.0, -2.0], [-2.0, -2.0]])
    dist, which = torch.cdist(x, centers).min(1)
    assert (dist < 0.5).float().mean() > 0.9  # on a mode (mode std 0.1)
    shares = torch.bincount(which[dist < 0.5], minlength=4).float() / (dist < 0.5).sum()
    assert torch.allclose(shares, torch.full((4,), 0.25), atol=0.04), shares
    assert abs(float(x[:, 0].mean())) < 0.2 and abs(float(x[:, 1].mean())) < 0.2


def test_ode_solver_is_exact_on_a_constant_field():
    """Every method integrates dx/dt = c exactly: x(1) = x(0) + c (the solver's grid covers [0, 1] once)."""

    class Const(torch.nn.Module):
        def forward(self, x, t, condition=None):
            return torch.full_like(x, 3.0)

    x0 = torch.randn(5, 3)
    for method in ("euler", "midpoint", "rk4"):
        assert torch.allclose(solve(Const(), x0, steps=7, method=method), x0 + 3.0, atol=1e-5)


def test_solver_has_the_bits_of_flow_matchings_ode_solver():
    """solve() writes torchdiffeq's fixed-step rules out (so sampling never imports torchdiffeq and scipy): a
    conditional velocity MLP integrated by each method gives the same bits as flow_matching's ODESolver."""
    from flow_matching.solver import ODESolver

    torch.manual_seed(0)
    model = VelocityMLP(5, hidden=16, time_dim=8, dropout=0.0, num_conditions=3)
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.5)  # a velocity that varies with x, t and the condition
    x0, condition = torch.randn(6, 5), torch.tensor([0, 1, 2, 0, 1, 2])
    reference = ODESolver(velocity_model=lambda x, t, condition=None: model(x, t, condition))
    for method in ("euler", "midpoint", "rk4"):
        grid = torch.linspace(0.0, 1.0, 8)
        with torch.no_grad():
            theirs = reference.sample(x_init=x0, step_size=None, method=method, time_grid=grid, condition=condition)
        ours = solve(model, x0, steps=7, method=method, condition=condition)
        assert torch.equal(ours, theirs), method
        assert not torch.equal(ours, x0)
