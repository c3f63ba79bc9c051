//! `porin-cni`: the CNI plugin binary (the logic lives in the `porin-cni` crate).

fn main() -> std::process::ExitCode {
    porin_cni::main()
}
