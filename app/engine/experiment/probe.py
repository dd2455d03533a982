"""The concept probe: L2 logistic regression on standardised, mean-pooled residuals."""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Probe:
    """Logistic regression on standardised features: p = sigmoid(((x - mu) / sd) @ w + b)."""

    layer: int
    mu: torch.Tensor  # [d]
    sd: torch.Tensor  # [d]
    w: torch.Tensor  # [d]
    b: float
    c: float = 1.0
    holdout_accuracy: float | None = None
    n_train: int = 0

    def decision(self, x: torch.Tensor) -> torch.Tensor:
        z = (x.double() - self.mu) / self.sd
        return z @ self.w + self.b

    def prob(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.decision(x))


def fit_logistic(X: torch.Tensor, y: torch.Tensor, c: float = 1.0, iters: int = 50, tol: float = 1e-10) -> tuple[torch.Tensor, float]:
    """L2 logistic regression by Newton's method (float64): minimise C*sum(logloss) + ||w||^2/2, bias unpenalised
    (scikit-learn's LogisticRegression(C=c) objective). X [n, d], y [n] in {0, 1}; returns (w [d], b)."""
    X = X.double()
    y = y.double()
    n, d = X.shape
    Xa = torch.cat([X, torch.ones(n, 1, dtype=torch.float64)], 1)
    theta = torch.zeros(d + 1, dtype=torch.float64)
    reg = torch.ones(d + 1, dtype=torch.float64) / c
    reg[-1] = 0.0
    for _ in range(iters):
        p = torch.sigmoid(Xa @ theta)
        grad = Xa.T @ (p - y) + reg * theta
        H = (Xa * (p * (1 - p))[:, None]).T @ Xa + torch.diag(reg) + 1e-10 * torch.eye(d + 1, dtype=torch.float64)
        step = torch.linalg.solve(H, grad)
        theta = theta - step
        if float(step.abs().max()) < tol:
            break
    return theta[:d], float(theta[d])


def train_probe(X: torch.Tensor, y: torch.Tensor, layer: int, c: float = 1.0, holdout_every: int = 5) -> Probe:
    """Standardise, fit on every prompt; holdout accuracy from a fit without every `holdout_every`-th prompt."""
    X = X.double()
    y = y.double()

    def fit(Xs, ys):
        mu = Xs.mean(0)
        sd = Xs.std(0, unbiased=False).clamp_min(1e-6)
        w, b = fit_logistic((Xs - mu) / sd, ys, c)
        return mu, sd, w, b

    acc = None
    n = X.shape[0]
    test = torch.zeros(n, dtype=torch.bool)
    test[::holdout_every] = True
    if n >= 2 * holdout_every and len(set(y[~test].tolist())) == 2:
        mu, sd, w, b = fit(X[~test], y[~test])
        pred = (((X[test] - mu) / sd) @ w + b) > 0
        acc = float((pred.double() == y[test]).double().mean())
    mu, sd, w, b = fit(X, y)
    return Probe(layer, mu, sd, w, b, c, acc, n)


def probe_layer_for(n_layers: int, hook_layer: int) -> int:
    """A later layer than the SAE's hook (reads what the text is about, not the steered feature itself)."""
    if hook_layer + 1 < n_layers:
        return min(n_layers - 1, hook_layer + max(1, n_layers // 6))
    return max(0, hook_layer - 1)
