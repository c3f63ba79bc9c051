//! porin-observe
