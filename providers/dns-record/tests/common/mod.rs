//! The real authoritative servers live in [`fedi_testbeds::dns`].

#![allow(unused_imports)] // each test binary uses a part

pub use fedi_testbeds::dns::*;
