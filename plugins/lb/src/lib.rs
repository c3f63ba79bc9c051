//! porin-lb
