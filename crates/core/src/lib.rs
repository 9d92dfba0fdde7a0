//! Downwatch domain types and the detector's math. No I/O, no framework.
//!
//! Values that cross the API boundary are parsed into the types here once
//! ("parse, don't validate"): a [`Slug`], [`ProblemKind`], [`CountryCode`] or
//! [`City`] that exists is valid, so the layers below never re-check them.

pub mod clock;
pub mod country;
pub mod detector;
pub mod domain;
pub mod time;

pub use clock::Clock;
pub use country::CountryCode;
pub use domain::*;
