//! Label metrics with the team owning each side's namespace. Configuration:
//! `namespace=team` pairs, comma-separated (`config = "payments=payments-team,
//! kube-system=platform"`); other namespaces get `unowned`, flows from or to
//! outside the cluster `world`.
use porin_wasm_guest::{Flow, LabelSink, Labeller, export_labeller};

struct Teams {
    owners: Vec<(String, String)>,
}

impl Teams {
    fn team(&self, namespace: &str) -> &str {
        if namespace.is_empty() {
            return "world";
        }
        self.owners
            .iter()
            .find(|(ns, _)| ns == namespace)
            .map_or("unowned", |(_, team)| team.as_str())
    }
}

impl Labeller for Teams {
    fn new(config: &str) -> Result<Self, String> {
        let owners = config
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(|pair| match pair.split_once('=') {
                Some((ns, team)) => Ok((ns.trim().to_string(), team.trim().to_string())),
                None => Err(format!("`{pair}` is not namespace=team")),
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { owners })
    }

    fn labels(&self) -> Vec<String> {
        vec!["source_team".to_string(), "destination_team".to_string()]
    }

    fn label(&mut self, flow: &Flow, out: &mut LabelSink) {
        out.set("source_team", self.team(flow.source().namespace()));
        out.set(
            "destination_team",
            self.team(flow.destination().namespace()),
        );
    }
}

export_labeller!(Teams);
