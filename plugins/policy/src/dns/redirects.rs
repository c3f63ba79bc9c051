//! Original destinations looked up once per client within one batch of received queries.
//!
//! Every query needs the datapath's record of where its client sent it (one `bpf()` map
//! read). The datagrams of one `recvmmsg` batch had all arrived before the first of them
//! is looked up, so for two datagrams of the same client in a batch a second read cannot
//! give a more current answer than the first: the record is read once per client and
//! batch and forgotten when the batch is done. Failed reads are not remembered.

use std::net::SocketAddr;

use porin_core::datapath::ProxyRedirect;

use crate::proxy::{OriginalDestinationError, OriginalDestinations, Transport};

/// The records read during the current batch.
#[derive(Default)]
pub struct BatchRedirects {
    seen: Vec<(SocketAddr, Transport, ProxyRedirect)>,
}

impl BatchRedirects {
    /// The record of `client`, read from the map the first time in this batch.
    pub fn lookup(
        &mut self,
        destinations: &OriginalDestinations,
        client: SocketAddr,
        transport: Transport,
    ) -> Result<ProxyRedirect, OriginalDestinationError> {
        if let Some((_, _, r)) = self
            .seen
            .iter()
            .find(|(c, t, _)| *c == client && *t == transport)
        {
            return Ok(*r);
        }
        let redirect = destinations.lookup(client, transport)?;
        self.seen.push((client, transport, redirect));
        Ok(redirect)
    }

    /// The batch is done: the next one reads the map again.
    pub fn clear(&mut self) {
        self.seen.clear();
    }
}
