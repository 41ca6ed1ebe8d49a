//! Object types for the kinds whose `spec` MetalLB allows to be left out.
//!
//! An `L2Advertisement` without a spec announces every pool from every node, a pattern MetalLB's
//! documentation uses, so such a manifest must load. kube's derive always requires `spec`, so
//! for these kinds it only generates the CRD and the object types are defined here.

/// Defines a namespaced `metallb.io/v1beta1` object type whose `spec` is optional, with the
/// serde and `kube::Resource` implementations kube's `Api` and watchers need.
macro_rules! object_with_optional_spec {
    (
        $(#[$attr:meta])*
        $name:ident {
            kind: $kind:literal,
            plural: $plural:literal,
            spec: $spec:ty = $empty_spec:expr,
            status: $status:ty $(,)?
        }
    ) => {
        $(#[$attr])*
        #[derive(Clone, Debug, Default, PartialEq)]
        pub struct $name {
            pub metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
            /// `None` when the object was written without a spec, which means the same as an
            /// empty one; [`Self::spec`] reads it either way.
            pub spec: Option<$spec>,
            pub status: Option<$status>,
        }

        impl $name {
            /// An object with a name and a spec, to be given a namespace before it is created.
            pub fn new(name: &str, spec: $spec) -> Self {
                Self {
                    metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                        name: Some(name.to_string()),
                        ..Default::default()
                    },
                    spec: Some(spec),
                    status: None,
                }
            }

            /// The spec, an empty one when the object has none.
            pub fn spec(&self) -> &$spec {
                const EMPTY: $spec = $empty_spec;
                self.spec.as_ref().unwrap_or(&EMPTY)
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                #[derive(serde::Serialize)]
                struct Repr<'a> {
                    #[serde(rename = "apiVersion")]
                    api_version: &'a str,
                    kind: &'a str,
                    metadata: &'a k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
                    #[serde(skip_serializing_if = "Option::is_none")]
                    spec: Option<&'a $spec>,
                    #[serde(skip_serializing_if = "Option::is_none")]
                    status: Option<&'a $status>,
                }
                Repr {
                    api_version: "metallb.io/v1beta1",
                    kind: $kind,
                    metadata: &self.metadata,
                    spec: self.spec.as_ref(),
                    status: self.status.as_ref(),
                }
                .serialize(serializer)
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                #[derive(serde::Deserialize)]
                struct Repr {
                    #[serde(default)]
                    metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
                    #[serde(default)]
                    spec: Option<$spec>,
                    #[serde(default)]
                    status: Option<$status>,
                }
                let repr = Repr::deserialize(deserializer)?;
                Ok(Self {
                    metadata: repr.metadata,
                    spec: repr.spec,
                    status: repr.status,
                })
            }
        }

        impl kube::Resource for $name {
            type DynamicType = ();
            type Scope = kube::core::NamespaceResourceScope;

            fn kind(_: &()) -> std::borrow::Cow<'_, str> {
                $kind.into()
            }
            fn group(_: &()) -> std::borrow::Cow<'_, str> {
                crate::API_GROUP.into()
            }
            fn version(_: &()) -> std::borrow::Cow<'_, str> {
                crate::API_VERSION.into()
            }
            fn plural(_: &()) -> std::borrow::Cow<'_, str> {
                $plural.into()
            }
            fn meta(&self) -> &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                &self.metadata
            }
            fn meta_mut(&mut self) -> &mut k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                &mut self.metadata
            }
        }
    };
}

pub(crate) use object_with_optional_spec;
