//! How a figure grows with N: least squares on four models, the one with the smallest
//! residual standard error (residuals in the figure's own units, divided by the degrees
//! of freedom left) chosen. A model needs more points than coefficients.

use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Model {
    /// a + b·N
    Linear,
    /// a + b·N·ln N
    NLogN,
    /// a + b·N + c·N²
    Quadratic,
    /// a·N^b (fitted on logarithms)
    Power,
}

pub const MODELS: [Model; 4] = [Model::Linear, Model::NLogN, Model::Quadratic, Model::Power];

#[derive(Clone, Debug)]
pub struct Fit {
    pub model: Model,
    pub coef: Vec<f64>,
    /// Residual standard error.
    pub rse: f64,
}

impl Model {
    fn params(self) -> usize {
        match self {
            Model::Quadratic => 3,
            _ => 2,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Model::Linear => "linear",
            Model::NLogN => "N log N",
            Model::Quadratic => "quadratic",
            Model::Power => "power law",
        }
    }
}

impl Fit {
    pub fn eval(&self, n: f64) -> f64 {
        let c = &self.coef;
        match self.model {
            Model::Linear => c[0] + c[1] * n,
            Model::NLogN => c[0] + c[1] * n * n.ln(),
            Model::Quadratic => c[0] + c[1] * n + c[2] * n * n,
            Model::Power => c[0] * n.powf(c[1]),
        }
    }

    /// The curve in gnuplot's syntax, of `x`.
    pub fn gnuplot(&self) -> String {
        let c = &self.coef;
        match self.model {
            Model::Linear => format!("({:e} + {:e}*x)", c[0], c[1]),
            Model::NLogN => format!("({:e} + {:e}*x*log(x))", c[0], c[1]),
            Model::Quadratic => format!("({:e} + {:e}*x + {:e}*x**2)", c[0], c[1], c[2]),
            Model::Power => format!("({:e}*x**{:e})", c[0], c[1]),
        }
    }
}

impl fmt::Display for Fit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.coef;
        let g = |v: f64| format!("{v:.4e}");
        match self.model {
            Model::Linear => write!(f, "{} + {}·N", g(c[0]), g(c[1]))?,
            Model::NLogN => write!(f, "{} + {}·N·ln N", g(c[0]), g(c[1]))?,
            Model::Quadratic => write!(f, "{} + {}·N + {}·N²", g(c[0]), g(c[1]), g(c[2]))?,
            Model::Power => write!(f, "{}·N^{:.3}", g(c[0]), c[1])?,
        }
        write!(
            f,
            "  ({}, residual s.e. {:.3e})",
            self.model.name(),
            self.rse
        )
    }
}

/// Least squares of `y` on the columns `x` (each row the regressors of one point).
fn solve(rows: &[Vec<f64>], y: &[f64]) -> Option<Vec<f64>> {
    let k = rows.first()?.len();
    // Normal equations A·c = b, by Gaussian elimination with partial pivoting.
    let mut a = vec![vec![0.0; k + 1]; k];
    for (r, yv) in rows.iter().zip(y) {
        for i in 0..k {
            for j in 0..k {
                a[i][j] += r[i] * r[j];
            }
            a[i][k] += r[i] * yv;
        }
    }
    for col in 0..k {
        let piv = (col..k).max_by(|&p, &q| a[p][col].abs().total_cmp(&a[q][col].abs()))?;
        a.swap(col, piv);
        if a[col][col].abs() < 1e-300 {
            return None;
        }
        let pivot = a[col].clone();
        for (row, r) in a.iter_mut().enumerate() {
            if row != col {
                let f = r[col] / pivot[col];
                for (x, p) in r.iter_mut().zip(&pivot).skip(col) {
                    *x -= f * p;
                }
            }
        }
    }
    Some((0..k).map(|i| a[i][k] / a[i][i]).collect())
}

/// Fits `model` to the points, if it has fewer coefficients than there are points.
pub fn fit(model: Model, pts: &[(f64, f64)]) -> Option<Fit> {
    if pts.len() <= model.params() {
        return None;
    }
    let coef = match model {
        Model::Power => {
            if pts.iter().any(|&(x, y)| x <= 0.0 || y <= 0.0) {
                return None;
            }
            let rows: Vec<Vec<f64>> = pts.iter().map(|&(x, _)| vec![1.0, x.ln()]).collect();
            let ly: Vec<f64> = pts.iter().map(|&(_, y)| y.ln()).collect();
            let c = solve(&rows, &ly)?;
            vec![c[0].exp(), c[1]]
        }
        _ => {
            let rows: Vec<Vec<f64>> = pts
                .iter()
                .map(|&(x, _)| match model {
                    Model::Linear => vec![1.0, x],
                    Model::NLogN => vec![1.0, x * x.ln()],
                    _ => vec![1.0, x, x * x],
                })
                .collect();
            let y: Vec<f64> = pts.iter().map(|&(_, y)| y).collect();
            solve(&rows, &y)?
        }
    };
    let mut f = Fit {
        model,
        coef,
        rse: 0.0,
    };
    let ssr: f64 = pts.iter().map(|&(x, y)| (y - f.eval(x)).powi(2)).sum();
    f.rse = (ssr / (pts.len() - model.params()) as f64).sqrt();
    Some(f)
}

/// Every model that fits, best (smallest residual standard error) first.
pub fn all(pts: &[(f64, f64)]) -> Vec<Fit> {
    // A parabola that bends down is no growth law: past the points it falls, below zero.
    let mut v: Vec<Fit> = MODELS
        .iter()
        .filter_map(|m| fit(*m, pts))
        .filter(|f| f.model != Model::Quadratic || f.coef[2] >= 0.0)
        .collect();
    // Equal residuals (an exact fit of several models): the simpler model.
    let scale = pts.iter().map(|p| p.1.abs()).fold(0.0, f64::max).max(1e-12);
    v.sort_by(|a, b| {
        if (a.rse - b.rse).abs() <= 1e-9 * scale {
            a.model.params().cmp(&b.model.params())
        } else {
            a.rse.total_cmp(&b.rse)
        }
    });
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pts(f: impl Fn(f64) -> f64) -> Vec<(f64, f64)> {
        [10.0, 25.0, 50.0, 100.0, 200.0, 300.0]
            .iter()
            .map(|&x| (x, f(x)))
            .collect()
    }

    #[test]
    fn each_model_recovers_its_own_curve() {
        for (model, f) in [
            (
                Model::Linear,
                &(|x: f64| 2.0 + 0.5 * x) as &dyn Fn(f64) -> f64,
            ),
            (Model::NLogN, &|x: f64| 1.0 + 0.01 * x * x.ln()),
            (Model::Quadratic, &|x: f64| 3.0 + 0.1 * x + 0.002 * x * x),
            (Model::Power, &|x: f64| 0.3 * x.powf(1.7)),
        ] {
            let best = &all(&pts(f))[0];
            assert_eq!(best.model, model, "{best}");
            assert!(best.rse < 1e-6, "{best}");
        }
    }

    #[test]
    fn too_few_points_fit_nothing() {
        assert!(all(&[(1.0, 1.0), (2.0, 2.0)]).is_empty());
        let three = all(&[(25.0, 1.0), (50.0, 2.1), (100.0, 3.9)]);
        assert!(three.iter().all(|f| f.model != Model::Quadratic));
    }
}
