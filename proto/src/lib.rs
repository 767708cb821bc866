//! Atoll's wire protocols and shared domain model.
//!
//! `pb` holds the generated protobuf/gRPC code (Mesos v1 names); `model` the typed domain
//! (ids, resources, tasks, agents, frameworks, the cluster event) that every other crate
//! computes with; `convert` translates between them at the edges, validating what comes in.

#[allow(clippy::large_enum_variant)]
pub mod pb {
    pub mod v1 {
        tonic::include_proto!("atoll.v1");
        pub mod scheduler {
            tonic::include_proto!("atoll.v1.scheduler");
        }
        pub mod agent {
            tonic::include_proto!("atoll.v1.agent");
        }
        pub mod operator {
            tonic::include_proto!("atoll.v1.operator");
        }
        /// Mesos's v1 operator API (`mesos.v1.master`): `Call`, `Response`, `Event`.
        pub mod master {
            tonic::include_proto!("atoll.v1.master");
        }
    }
}

/// The well-known protobuf types the generated code uses (`google.protobuf.Duration`).
pub use prost_types;

/// The encoded `FileDescriptorSet` of every `.proto` file above: what the Mesos JSON wire needs
/// to map protobuf messages to and from JSON by field and enum names.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/atoll_descriptors.bin"));

pub mod convert;
pub mod model;
pub mod paths;
pub mod recordio;
