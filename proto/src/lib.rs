//! The Pumas gRPC contracts, generated from `proto/pumas/**/*.proto`.
//!
//! One module per protobuf package (`pumas.index.v1` is [`index::v1`]), plus the encoded file
//! descriptor set that every service registers with server reflection.

#![allow(clippy::all, missing_docs)]

/// `pumas.common.v1`: messages shared by every service.
pub mod common {
    pub mod v1 {
        tonic::include_proto!("pumas.common.v1");
    }
}

/// `pumas.index.v1`: the library and its index.
pub mod index {
    pub mod v1 {
        tonic::include_proto!("pumas.index.v1");
    }
}

/// `pumas.fetch.v1`: hub search and downloads.
pub mod fetch {
    pub mod v1 {
        tonic::include_proto!("pumas.fetch.v1");
    }
}

/// `pumas.mapper.v1`: app layouts and links.
pub mod mapper {
    pub mod v1 {
        tonic::include_proto!("pumas.mapper.v1");
    }
}

/// `pumas.gateway.v1`: the public API.
pub mod gateway {
    pub mod v1 {
        tonic::include_proto!("pumas.gateway.v1");
    }
}

/// Encoded `FileDescriptorSet` of every Pumas proto, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("pumas_descriptor");

/// The dependency contract version this build speaks (`pumas.common.v1.DependencyContractVersion`).
pub const DEPENDENCY_CONTRACT_VERSION: u32 = common::v1::DependencyContractVersion::V1 as u32;
