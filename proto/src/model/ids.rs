//! Identifier newtypes, so an agent id can never be passed where a task id is meant.

use std::fmt;

use serde::{Deserialize, Serialize};

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub String);

        impl $name {
            pub fn new(value: impl Into<String>) -> Self {
                Self(value.into())
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<&str> for $name {
            fn from(value: &str) -> Self {
                Self(value.to_owned())
            }
        }
    };
}

id_type!(
    /// An agent, assigned by the master at first registration and kept by the agent.
    AgentId
);
id_type!(
    /// A framework, assigned by the master at first subscription.
    FrameworkId
);
id_type!(
    /// A task, chosen by its framework; unique within that framework.
    TaskId
);
id_type!(
    /// An offer, assigned by the master.
    OfferId
);
id_type!(
    /// The executor of a task group, chosen by its framework (a task launched on its own has
    /// none: its executor is its own).
    ExecutorId
);
