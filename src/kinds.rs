//! The names of the interfaces, networks and samplers, as the reference (and a case's
//! `type`) spells them. Pure data, without libtorch: the library's samplers and the golden
//! harness (also in its libtorch-free `verify` build) share these.

use crate::error::{Error, Result};

fn parse_named<T: Copy>(all: &[T], name: fn(T) -> &'static str, what: &str, s: &str) -> Result<T> {
    all.iter().copied().find(|&t| name(t) == s).ok_or_else(|| Error::Unknown {
        what: what.into(),
        name: s.into(),
        known: all.iter().map(|&t| name(t)).collect::<Vec<_>>().join(", "),
    })
}

/// The interfaces a case can name (`interface.type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum InterfaceType {
    /// `sit`: linear flow matching.
    Sit,
    /// `edm`: preconditioned denoising.
    Edm,
    /// `mean_flow`: average velocity with an exact JVP target.
    MeanFlow,
    /// `sct`: consistency training (TrigFlow; the crate's own specification).
    Sct,
    /// `scd`: consistency distillation (TrigFlow; the crate's own specification).
    Scd,
}

impl InterfaceType {
    /// Every interface type.
    pub const ALL: [InterfaceType; 5] = [InterfaceType::Sit, InterfaceType::Edm, InterfaceType::MeanFlow, InterfaceType::Sct, InterfaceType::Scd];

    /// The name written in `case.json`.
    pub fn as_str(self) -> &'static str {
        match self {
            InterfaceType::Sit => "sit",
            InterfaceType::Edm => "edm",
            InterfaceType::MeanFlow => "mean_flow",
            InterfaceType::Sct => "sct",
            InterfaceType::Scd => "scd",
        }
    }

    /// Parses a name; anything else is [`Error::Unknown`].
    pub fn parse(s: &str) -> Result<InterfaceType> {
        parse_named(&Self::ALL, Self::as_str, "interface", s)
    }

    /// Whether the interface's loss goes through a Jacobian-vector product (looser
    /// tolerances: the JVP of a network sums twice as many roundings as its forward).
    pub fn jvp_based(self) -> bool {
        matches!(self, InterfaceType::MeanFlow | InterfaceType::Sct | InterfaceType::Scd)
    }
}

/// The backbones a case can name (`network.type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum NetworkType {
    /// `probe_mlp`: the tiny probe network of the format.
    ProbeMlp,
    /// `dit`: the reference DiT.
    Dit,
    /// `lightning_dit`: the reference LightningDiT.
    LightningDit,
}

impl NetworkType {
    /// Every network type.
    pub const ALL: [NetworkType; 3] = [NetworkType::ProbeMlp, NetworkType::Dit, NetworkType::LightningDit];

    /// Parses a name; anything else is [`Error::Unknown`].
    pub fn parse(s: &str) -> Result<NetworkType> {
        parse_named(&Self::ALL, Self::as_str, "network", s)
    }

    /// The name written in `case.json`.
    pub fn as_str(self) -> &'static str {
        match self {
            NetworkType::ProbeMlp => "probe_mlp",
            NetworkType::Dit => "dit",
            NetworkType::LightningDit => "lightning_dit",
        }
    }
}

/// The samplers a case can name (`sampler.type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SamplerType {
    /// `euler`.
    Euler,
    /// `heun`.
    Heun,
    /// `euler-maruyama`.
    EulerMaruyama,
    /// `euler_jump`.
    EulerJump,
}

impl SamplerType {
    /// Every sampler type.
    pub const ALL: [SamplerType; 4] = [SamplerType::Euler, SamplerType::Heun, SamplerType::EulerMaruyama, SamplerType::EulerJump];

    /// Parses `euler`, `heun`, `euler-maruyama` or `euler_jump`; anything else is [`Error::Unknown`].
    pub fn parse(s: &str) -> Result<SamplerType> {
        parse_named(&Self::ALL, Self::as_str, "sampler", s)
    }

    /// The name written in `case.json` (the reference's, hyphen and underscore as it spells them).
    pub fn as_str(self) -> &'static str {
        match self {
            SamplerType::Euler => "euler",
            SamplerType::Heun => "heun",
            SamplerType::EulerMaruyama => "euler-maruyama",
            SamplerType::EulerJump => "euler_jump",
        }
    }
}
