//! porin-policy
