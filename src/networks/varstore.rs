//! Any `tch::nn` network as a [`Backbone`]: a `VarStore` (its variables are the parameters,
//! by their VarStore path, sorted) and a forward closure.
//!
//! ```text
//! let vs = nn::VarStore::new(Device::Cpu);
//! let l1 = nn::linear(vs.root() / "l1", 3, 64, Default::default());
//! let l2 = nn::linear(vs.root() / "l2", 64, 2, Default::default());
//! let net = VarStoreBackbone::new(vs, move |x, t, _cond, _pass| {
//!     Ok(l2.forward(&l1.forward(&Tensor::cat(&[x, &t.unsqueeze(-1)], -1)).silu()))
//! });
//! // net.parameters() = [("l1.bias", ..), ("l1.weight", ..), ("l2.bias", ..), ("l2.weight", ..)]
//! // nn::Adam::default().build(net.var_store(), 1e-3) trains it.
//! ```
//!
//! The closure gets the [`Cond`] and the [`Pass`] of each call: the mode (`pass.train`, for
//! dropout or batch norm through `nn::ModuleT::forward_t`) and the streams. It returns the
//! output, or a [`NetOutput`] with per-block features (what REPA aligns). What conditioning it
//! reads is declared with [`VarStoreBackbone::accepting`] (by default none: an unconditional
//! network, to which labels are refused).

use tch::{nn, Tensor};

use super::{Accepts, Backbone, Cond, NetOutput, Pass};
use crate::error::Result;

/// A `tch::nn` network (a `VarStore` and a forward closure) as a [`Backbone`].
pub struct VarStoreBackbone<F> {
    vs: nn::VarStore,
    accepts: Accepts<'static>,
    forward: F,
}

impl<F> std::fmt::Debug for VarStoreBackbone<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<String> = self.parameter_names();
        f.debug_struct("VarStoreBackbone").field("parameters", &names).field("accepts", &self.accepts).finish_non_exhaustive()
    }
}

impl<F> VarStoreBackbone<F> {
    /// Wraps the variables of `vs` and the forward `forward(x, t, cond, pass)`, which returns
    /// the output (a `Tensor`) or a [`NetOutput`]. The network takes no conditioning until
    /// [`VarStoreBackbone::accepting`] says otherwise.
    pub fn new<O>(vs: nn::VarStore, forward: F) -> Self
    where
        F: Fn(&Tensor, &Tensor, Cond<'_>, Pass<'_>) -> Result<O>,
        O: Into<NetOutput>,
    {
        VarStoreBackbone { vs, accepts: Accepts::NOTHING, forward }
    }

    /// Declares the conditioning the closure reads (labels, `dt`, `gw`, extra inputs).
    pub fn accepting(self, accepts: Accepts<'static>) -> Self {
        VarStoreBackbone { accepts, ..self }
    }

    /// The `VarStore` (for an optimizer: `nn::Adam::default().build(net.var_store(), lr)`).
    pub fn var_store(&self) -> &nn::VarStore {
        &self.vs
    }

    /// The `VarStore`, mutably (to load or freeze variables).
    pub fn var_store_mut(&mut self) -> &mut nn::VarStore {
        &mut self.vs
    }

    fn parameter_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.vs.variables().into_keys().collect();
        names.sort();
        names
    }
}

impl<F, O> Backbone for VarStoreBackbone<F>
where
    F: Fn(&Tensor, &Tensor, Cond<'_>, Pass<'_>) -> Result<O>,
    O: Into<NetOutput>,
{
    fn forward(&self, x: &Tensor, t: &Tensor, cond: Cond<'_>, pass: Pass<'_>) -> Result<NetOutput> {
        Ok((self.forward)(x, t, cond, pass)?.into())
    }

    /// The trainable variables of the `VarStore` by path (`l1.weight`, ...), sorted by path
    /// (the `VarStore`'s own order is a hash map's).
    fn parameters(&self) -> Vec<(String, Tensor)> {
        let mut v: Vec<(String, Tensor)> = self.vs.variables().into_iter().filter(|(_, t)| t.requires_grad()).collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    fn accepts(&self) -> Accepts<'_> {
        self.accepts
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::nn::Module;
    use tch::{Device, Kind};

    #[test]
    fn parameters_by_sorted_path_and_declared_conditioning() {
        let vs = nn::VarStore::new(Device::Cpu);
        let b = nn::linear(vs.root() / "b", 3, 4, Default::default());
        let a = nn::linear(vs.root() / "a", 4, 2, Default::default());
        let net = VarStoreBackbone::new(vs, move |x, t, cond, _| {
            let h = b.forward(&Tensor::f_cat(&[x, &t.f_unsqueeze(-1)?], -1)?).f_silu()?;
            let h = match cond.extra("shift") {
                Some(s) => h.f_add(s)?,
                None => h,
            };
            Ok(a.forward(&h))
        });
        let names: Vec<String> = net.parameters().into_iter().map(|(k, _)| k).collect();
        assert_eq!(names, ["a.bias", "a.weight", "b.bias", "b.weight"]);
        let x = Tensor::ones([5, 2], (Kind::Float, Device::Cpu));
        let t = Tensor::zeros([5], (Kind::Float, Device::Cpu));
        assert_eq!(net.call(&x, &t, Cond::none(), Pass::eval()).unwrap().out.size(), [5, 2]);
        // Labels and undeclared extras are refused by name.
        let y = Tensor::zeros([5], (Kind::Int64, Device::Cpu));
        let e = net.call(&x, &t, Cond::labels(Some(&y)), Pass::eval()).unwrap_err();
        assert!(matches!(&e, crate::Error::InvalidArgument { name, .. } if name == "y"), "{e}");
        let shift = Tensor::ones([5, 4], (Kind::Float, Device::Cpu));
        let extra = [("shift", &shift)];
        let e = net.call(&x, &t, Cond::none().with_extra(&extra), Pass::eval()).unwrap_err();
        assert!(matches!(&e, crate::Error::InvalidArgument { name, .. } if name == "extra.shift"), "{e}");
        let net = net.accepting(Accepts { extra: &["shift"], ..Accepts::NOTHING });
        let with = net.call(&x, &t, Cond::none().with_extra(&extra), Pass::eval()).unwrap().out;
        let without = net.call(&x, &t, Cond::none(), Pass::eval()).unwrap().out;
        assert!(!with.allclose(&without, 1e-6, 1e-6, false), "the extra input reaches the network");
    }
}
