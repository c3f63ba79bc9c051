//! Enforcement in the datapath: from parsed policies to the policy maps' contents
//! (`desired`, pure), policy objects with their last good version (`loader`), the
//! writer of differences (`programmer`), and the table naming policy ids (`names`).

pub mod desired;
pub mod engine;
pub mod incremental;
pub mod loader;
pub mod names;
pub mod programmer;

#[cfg(test)]
mod incremental_tests;
#[cfg(test)]
mod tests;
