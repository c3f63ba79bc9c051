//! porin-encryption
