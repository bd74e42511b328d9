//! The API's OpenAPI 3.1 document, generated from the code: each operation's `#[utoipa::path]`
//! on its handler (method, path, parameters, bodies, every answer) and the types' `ToSchema`,
//! collected from the router's own lists of operations (`super::router`); plus what every
//! operation shares, added here once: the bearer scheme on each authenticated operation with its
//! 401, `X-Request-ID` both ways, 431 and 500. Served at `GET /v1/openapi.json`, with Swagger UI
//! (its assets compiled into the binary, nothing fetched from elsewhere) at `GET /v1/docs`;
//! both are public, so tools can fetch the document.

use super::error::ErrorBody;
use axum::Router;
use utoipa::openapi::path::{Operation, Parameter, ParameterBuilder, ParameterIn};
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Header, OpenApi, PathItem, Ref, RefOr, Required};
use utoipa::{OpenApi as _, ToSchema};
use utoipa_swagger_ui::{Config, SwaggerUi};

/// Where the document is served.
pub const DOCUMENT_PATH: &str = "/v1/openapi.json";
/// Where Swagger UI is served.
pub const DOCS_PATH: &str = "/v1/docs";
/// The name of the bearer security scheme.
const BEARER: &str = "bearer";

/// What the document says before any operation is added.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "Beta9 Provisioner API",
        description = "Self-hosted Beta9 environments in the customer's own cloud account. Every \
                       `/v1` operation needs `Authorization: Bearer <token>`. Every answer \
                       carries `X-Request-ID`; every error has the body `ErrorBody`. See \
                       docs/API.md for the contract and its limits."
    ),
    components(schemas(ErrorBody)),
    tags(
        (name = "environments", description = "Request, read, retry and destroy environments."),
        (name = "streams", description = "Live events and executor logs (Server-Sent Events)."),
        (name = "plans", description = "Previews: what a document would build and cost."),
        (name = "runbook", description = "The admins' operations on stuck environments."),
        (name = "tokens", description = "API tokens: each with a tenant, a role and an expiry (admins only)."),
        (name = "health", description = "Liveness and readiness."),
    )
)]
struct Base;

/// The document of the `authenticated` and `public` operations, as the router serves them.
pub fn document(mut authenticated: OpenApi, public: OpenApi) -> OpenApi {
    for operation in operations(&mut authenticated) {
        require_bearer(operation);
    }
    for item in authenticated.paths.paths.values_mut() {
        let commands = [
            &mut item.post,
            &mut item.put,
            &mut item.delete,
            &mut item.patch,
        ];
        for operation in commands.into_iter().filter_map(Option::as_mut) {
            add_error(
                operation,
                429,
                "`rate_limited`: the token sent more commands than its rate limit allows \
                 (`Retry-After` says when to try again).",
            );
        }
    }
    let mut document = Base::openapi();
    document.info.version = env!("CARGO_PKG_VERSION").to_owned();
    document.merge(authenticated);
    document.merge(public);
    for operation in operations(&mut document) {
        add_shared_answers(operation);
    }
    document
        .components
        .get_or_insert_with(Default::default)
        .add_security_scheme(
            BEARER,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "An API token (`POST /v1/tokens`): its role — viewer, operator or \
                         admin — says what it may do, its tenant which environments it sees; \
                         or the bootstrap admin token (`PROVISIONER_ADMIN_TOKEN`).",
                    ))
                    .build(),
            ),
        );
    document
}

/// The routes of the document and of Swagger UI, which shows it.
pub fn routes<S: Clone + Send + Sync + 'static>(document: OpenApi) -> Router<S> {
    SwaggerUi::new(DOCS_PATH)
        .url(DOCUMENT_PATH, document)
        // The online validator's badge would call out to the internet.
        .config(Config::default().validator_url("none"))
        .into()
}

/// Every operation of the document.
fn operations(document: &mut OpenApi) -> impl Iterator<Item = &mut Operation> {
    document.paths.paths.values_mut().flat_map(|item| {
        let PathItem {
            get,
            put,
            post,
            delete,
            options,
            head,
            patch,
            trace,
            ..
        } = item;
        [get, put, post, delete, options, head, patch, trace]
            .into_iter()
            .filter_map(Option::as_mut)
    })
}

fn require_bearer(operation: &mut Operation) {
    operation.security = Some(vec![SecurityRequirement::new(BEARER, Vec::<String>::new())]);
    add_error(
        operation,
        401,
        "`unauthorized`: no valid `Authorization: Bearer <token>` (answered with \
         `WWW-Authenticate: Bearer`).",
    );
}

/// What any request may be answered, whatever its operation.
fn add_shared_answers(operation: &mut Operation) {
    operation
        .parameters
        .get_or_insert_with(Vec::new)
        .push(request_id_parameter());
    add_error(
        operation,
        431,
        "`request_header_fields_too_large`: the request line and headers exceed 64 KiB (the \
         connection is closed).",
    );
    add_error(
        operation,
        500,
        "`internal`: a defect; logged with the request id.",
    );
    for response in operation.responses.responses.values_mut() {
        if let RefOr::T(response) = response {
            response.headers.insert(
                "X-Request-ID".to_owned(),
                Header::new(ObjectBuilder::new().schema_type(Type::String)),
            );
        }
    }
}

fn request_id_parameter() -> Parameter {
    ParameterBuilder::new()
        .name("X-Request-ID")
        .parameter_in(ParameterIn::Header)
        .required(Required::False)
        .description(Some(
            "The request's id, echoed in the answer and recorded in the metadata of the events \
             it causes: kept when it is 1-128 visible ASCII characters, else replaced by a \
             generated `req_<ulid>`.",
        ))
        .schema(Some(ObjectBuilder::new().schema_type(Type::String)))
        .build()
}

/// Adds an error answer with the error body, unless the operation documents that status itself.
fn add_error(operation: &mut Operation, status: u16, description: &str) {
    operation
        .responses
        .responses
        .entry(status.to_string())
        .or_insert_with(|| {
            ResponseBuilder::new()
                .description(description)
                .content(
                    "application/json",
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name(ErrorBody::name())))
                        .build(),
                )
                .into()
        });
}
