//! Client-facing HTTP: error format, query handling, and the route handlers.

pub mod drain;
pub mod errors;
pub mod forward;
pub mod idle_body;
pub mod index_route;
pub mod query;
pub mod registry_routes;
pub mod token_route;
pub mod v1_routes;
