//! Generated protobuf code: the public API (`v1`) and the stored records (`storage`).

/// The public gRPC API, package `tokenbroker.v1`.
#[allow(clippy::all, missing_docs)]
pub mod v1 {
    tonic::include_proto!("tokenbroker.v1");
}

/// Records kept in sled, package `tokenbroker.storage.v1`.
#[allow(clippy::all, missing_docs)]
pub mod storage {
    tonic::include_proto!("tokenbroker.storage.v1");
}

/// Encoded descriptors of both packages and their imports, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/tokenbroker_descriptor.bin"));
