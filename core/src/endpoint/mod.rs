//! Endpoints: the pods of this node and their network interfaces.

pub mod links;
