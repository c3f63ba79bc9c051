use std::path::PathBuf;

/// Loading a native plugin failed; the message names the file.
#[derive(Debug, thiserror::Error)]
pub enum NativeLoadError {
    #[error("native plugin {path}: cannot load the shared object: {message}")]
    Open { path: PathBuf, message: String },
    #[error(
        "native plugin {path}: exports no `{symbol}`; is it built with porin_plugin_sdk::export_native_plugin!?"
    )]
    MissingSymbol { path: PathBuf, symbol: String },
    #[error(
        "native plugin {path}: built against plugin ABI version {found}, this agent speaks version {expected}; rebuild it with a matching porin-plugin-sdk"
    )]
    AbiMismatch {
        path: PathBuf,
        found: u32,
        expected: u32,
    },
    #[error("native plugin {path}: {message}")]
    Create { path: PathBuf, message: String },
}
