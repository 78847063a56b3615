//! Accepting connections, sessions and links, and routing each link to its entity.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use fe2o3_amqp::acceptor::sasl_acceptor::SaslServerFrame;
use fe2o3_amqp::acceptor::{
    ConnectionAcceptor, LinkAcceptor, LinkEndpoint, ListenerSessionHandle, SaslAcceptor,
    SessionAcceptor,
};
use fe2o3_amqp_types::definitions::{AmqpError, Error as AmqpErrorFrame, ErrorCondition, Role};
use fe2o3_amqp_types::messaging::{Source, TargetArchetype};
use fe2o3_amqp_types::performatives::Attach;
use fe2o3_amqp_types::primitives::{Array, Symbol, Value};
use fe2o3_amqp_types::sasl::{SaslCode, SaslInit, SaslOutcome, SaslResponse};
use serde_amqp::described::Described;
use serde_amqp::descriptor::Descriptor;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use super::broker::{Broker, Entity, SessionLockError};
use super::{links, node};

/// The source filter naming the session a receiver wants.
pub(crate) const SESSION_FILTER: &str = "com.microsoft:session-filter";
const SESSION_FILTER_CODE: u64 = 0x0000_0013_7000_000c;

/// Replies of the management nodes, by the reply-to address of the client's receiver link.
pub(crate) type ReplyRoutes = Arc<Mutex<HashMap<String, mpsc::UnboundedSender<node::Reply>>>>;

/// SASL that offers ANONYMOUS and PLAIN and accepts any credentials.
#[derive(Debug, Clone, Default)]
struct AcceptAnything;

impl SaslAcceptor for AcceptAnything {
    fn mechanisms(&self) -> Array<Symbol> {
        Array::from(vec![Symbol::from("ANONYMOUS"), Symbol::from("PLAIN")])
    }
    fn on_init(&mut self, _init: SaslInit) -> SaslServerFrame {
        SaslServerFrame::Outcome(SaslOutcome {
            code: SaslCode::Ok,
            additional_data: None,
        })
    }
    fn on_response(&mut self, _response: SaslResponse) -> SaslServerFrame {
        SaslServerFrame::Outcome(SaslOutcome {
            code: SaslCode::Ok,
            additional_data: None,
        })
    }
}

/// Accepts connections until the listener task is aborted.
pub(crate) async fn serve(listener: TcpListener, broker: Arc<Broker>) {
    let link_ids = Arc::new(AtomicU64::new(1));
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        // Small frames, request/response: without this every round trip waits for a
        // delayed ACK (about 40 ms).
        let _ = stream.set_nodelay(true);
        let broker = broker.clone();
        let link_ids = link_ids.clone();
        tokio::spawn(async move {
            if let Err(e) = connection(stream, broker, link_ids).await {
                tracing::debug!(error = %e, "fake Service Bus: connection ended");
            }
        });
    }
}

async fn connection(
    stream: TcpStream,
    broker: Arc<Broker>,
    link_ids: Arc<AtomicU64>,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let acceptor = ConnectionAcceptor::builder()
        .container_id("chatstream-fake-servicebus")
        .sasl_acceptor(AcceptAnything)
        .build();
    let mut conn = acceptor.accept(super::quickack::QuickAck(stream)).await?;
    let routes = ReplyRoutes::default();
    let sessions = SessionAcceptor::new();
    while let Some(incoming) = conn.next_incoming_session().await {
        let session = sessions
            .accept_incoming_session(incoming, &mut conn)
            .await?;
        tokio::spawn(session_loop(
            session,
            broker.clone(),
            routes.clone(),
            link_ids.clone(),
        ));
    }
    let _ = conn.close().await;
    Ok(())
}

async fn session_loop(
    mut session: ListenerSessionHandle,
    broker: Arc<Broker>,
    routes: ReplyRoutes,
    link_ids: Arc<AtomicU64>,
) {
    while let Some(attach) = session.next_incoming_attach().await {
        let link_id = link_ids.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = attach_link(attach, &mut session, &broker, &routes, link_id).await {
            tracing::debug!(error = %e, "fake Service Bus: attach failed");
        }
    }
    let _ = session.end().await;
}

fn address_of(attach: &Attach) -> Option<String> {
    match attach.role {
        // The client sends: the address is the target.
        Role::Sender => match attach.target.as_deref()? {
            TargetArchetype::Target(t) => t.address.clone(),
            #[allow(unreachable_patterns)]
            _ => None,
        },
        Role::Receiver => attach.source.as_ref()?.address.clone(),
    }
}

/// The session asked for by a receiver's source filter: `None` when there is no filter,
/// `Some(None)` for "next available", `Some(Some(id))` for one session.
fn session_filter(source: &Source) -> Option<Option<String>> {
    let value = source.filter.as_ref()?.get(&Symbol::from(SESSION_FILTER))?;
    Some(match value {
        Value::String(s) => Some(s.clone()),
        Value::Described(d) => match &d.value {
            Value::String(s) => Some(s.clone()),
            _ => None,
        },
        _ => None,
    })
}

fn error(condition: impl Into<ErrorCondition>, description: impl Into<String>) -> AmqpErrorFrame {
    AmqpErrorFrame::new(condition.into(), Some(description.into()), None)
}

fn custom(condition: &str) -> ErrorCondition {
    ErrorCondition::Custom(Symbol::from(condition))
}

async fn attach_link(
    mut attach: Attach,
    session: &mut ListenerSessionHandle,
    broker: &Arc<Broker>,
    routes: &ReplyRoutes,
    link_id: u64,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let address = address_of(&attach).unwrap_or_default();
    let entity = broker.resolve(&address);
    // Decide what the link is before answering the attach, so that a refusal can answer with
    // a null terminus followed by a detach carrying the error, as Service Bus does.
    let mut refusal = None;
    let mut session_lock = None;
    match (&entity, attach.role.clone()) {
        (None, _) => {
            refusal = Some(error(
                AmqpError::NotFound,
                format!("no messaging entity at {address:?}"),
            ))
        }
        (Some(Entity::Topic(_)), Role::Receiver) | (Some(Entity::Queue(_)), Role::Sender) => {
            refusal = Some(error(
                AmqpError::NotAllowed,
                "send to topics, receive from subscriptions",
            ))
        }
        (Some(Entity::Queue(q)), Role::Receiver) => {
            let wanted = attach.source.as_deref().and_then(session_filter);
            match (broker.requires_session(q), wanted) {
                (true, Some(wanted)) => match broker.lock_session(q, wanted.as_deref(), link_id) {
                    Ok(s) => {
                        if let Some(source) = attach.source.as_mut() {
                            let described = Described {
                                descriptor: Descriptor::Code(SESSION_FILTER_CODE),
                                value: Value::String(s.clone()),
                            };
                            source.filter.get_or_insert_with(Default::default).insert(
                                Symbol::from(SESSION_FILTER),
                                Value::Described(Box::new(described)),
                            );
                        }
                        session_lock = Some(s);
                    }
                    Err(e) => refusal = Some(session_refusal(&e)),
                },
                (true, None) => {
                    refusal = Some(error(
                        AmqpError::NotAllowed,
                        "this subscription requires sessions: use a session receiver",
                    ))
                }
                (false, Some(_)) => {
                    refusal = Some(error(
                        AmqpError::NotAllowed,
                        "this subscription does not require sessions",
                    ))
                }
                (false, None) => {}
            }
        }
        _ => {}
    }
    if refusal.is_some() {
        match attach.role {
            Role::Sender => attach.target = None,
            Role::Receiver => attach.source = None,
        }
    }
    let settled =
        attach.snd_settle_mode == fe2o3_amqp_types::definitions::SenderSettleMode::Settled;
    let mut acceptor = LinkAcceptor::builder();
    if session_lock.is_some() {
        // What azservicebus reads as `session_locked_until`.
        let until = super::amqp::now_ms() + super::LOCK_DURATION_MS;
        let mut props = fe2o3_amqp_types::definitions::Fields::default();
        props.insert(
            Symbol::from("com.microsoft:locked-until-utc"),
            Value::Timestamp(fe2o3_amqp_types::primitives::Timestamp::from_milliseconds(
                until,
            )),
        );
        acceptor = acceptor.properties(props);
    }
    let endpoint = acceptor
        .build()
        .accept_incoming_attach(attach, session)
        .await?;
    if let Some(err) = refusal {
        let _ = match endpoint {
            LinkEndpoint::Sender(s) => s.close_with_error(err).await,
            LinkEndpoint::Receiver(r) => r.close_with_error(err).await,
        };
        return Ok(());
    }
    match (entity, endpoint) {
        (Some(Entity::Cbs | Entity::Management), LinkEndpoint::Receiver(r)) => {
            tokio::spawn(node::serve_requests(r, routes.clone()));
        }
        (Some(Entity::Cbs | Entity::Management), LinkEndpoint::Sender(s)) => {
            node::attach_replies(s, routes);
        }
        (Some(Entity::Topic(topic)), LinkEndpoint::Receiver(r)) => {
            tokio::spawn(links::accept_published(r, broker.clone(), topic));
        }
        (Some(Entity::Queue(q)), LinkEndpoint::Sender(s)) => {
            let delivery = links::Outgoing {
                broker: broker.clone(),
                queue: q,
                session: session_lock,
                link_id,
                settled,
            };
            tokio::spawn(delivery.run(s));
        }
        _ => {}
    }
    Ok(())
}

fn session_refusal(e: &SessionLockError) -> AmqpErrorFrame {
    match e {
        SessionLockError::Locked => error(
            custom("com.microsoft:session-cannot-be-locked"),
            "the session is locked by another receiver",
        ),
        SessionLockError::NoneAvailable => error(
            custom("com.microsoft:timeout"),
            "no unlocked session has messages",
        ),
        SessionLockError::NotSessionful => error(
            AmqpError::NotAllowed,
            "this subscription does not require sessions",
        ),
        SessionLockError::NotFound => error(AmqpError::NotFound, "no such subscription"),
    }
}
