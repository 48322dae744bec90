//! The party key against offline guessing. A fake server records everything
//! a keyed victim sends while connecting; a fake client records everything a
//! keyed victim server answers. Neither record lets the attacker test a
//! guess of the key offline: only the one guess it committed to online, in
//! its own key exchange message, can be checked, one per connection.
//!
//! What these tests prove, precisely: every check an attacker can run with
//! a candidate key over what it recorded (the old design's proof, and the
//! new design's key confirmations, recomputed with the attacker's own
//! ephemeral secret) tells the true key from a wrong one only when that
//! candidate was the attacker's online guess. That no *other* computation
//! can do better is SPAKE2's security argument (docs/PROTOCOL.md "Party
//! key"), not something a test can show.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use lanspread_peer::net::client::request;
use lanspread_peer::net::identity::Identity;
use lanspread_peer::net::tls::{self, party_binding, PartyExchange, Role};
use lanspread_peer::net::{bind_endpoint, close_code};
use lanspread_proto::wire::{ErrorCode, Hello, Request, Response};
use lanspread_proto::{Hash, PROTOCOL_VERSION};
use rand_core::{CryptoRng, RngCore};

use super::HostileClient;
use crate::support::{local_config, small_game, stop, Peer};

const TRUE_KEY: &str = "lan-2026";
const WRONG_KEY: &str = "lan-2025";

/// A deterministic RNG, so the attacker can replay its own ephemeral secret
/// with other candidate keys offline.
struct Replayable(blake3::OutputReader);

impl Replayable {
    fn new(seed: &str) -> Self {
        let mut hasher = blake3::Hasher::new_derive_key("lanspread test replayable rng");
        hasher.update(seed.as_bytes());
        Self(hasher.finalize_xof())
    }
}

impl RngCore for Replayable {
    fn next_u32(&mut self) -> u32 {
        let mut b = [0; 4];
        self.0.fill(&mut b);
        u32::from_le_bytes(b)
    }
    fn next_u64(&mut self) -> u64 {
        let mut b = [0; 8];
        self.0.fill(&mut b);
        u64::from_le_bytes(b)
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        self.0.fill(dest);
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> {
        self.0.fill(dest);
        Ok(())
    }
}

impl CryptoRng for Replayable {}

/// Whether `bytes` hold `value` anywhere.
fn holds(bytes: &[u8], value: &[u8; 32]) -> bool {
    bytes.windows(32).any(|w| w == value)
}

/// What a fake server saw of one keyed victim's connection.
struct ServerCapture {
    /// Every byte the victim sent on every stream, in order.
    sent: Vec<u8>,
    /// Keying material of the session under the old proof's label.
    old_binding: [u8; 32],
    /// The new design's binding of the session.
    binding: [u8; 32],
    /// The seed of the fake server's own ephemeral secret.
    seed: String,
}

impl ServerCapture {
    /// The old design's check: `keyed_hash(K, EKM)` found in the capture.
    fn old_proof_found(&self, guess: &str) -> bool {
        let proof = blake3::keyed_hash(&tls::party_key(guess), &self.old_binding);
        holds(&self.sent, proof.as_bytes())
    }

    /// The new design's check: with the victim's recorded exchange message
    /// and the fake server's own replayed ephemeral secret, finish the
    /// exchange under `guess` and look for either confirmation.
    fn confirmation_found(&self, guess: &str) -> bool {
        let Ok(Some((Request::Hello(hello), _))) = Request::decode(&self.sent) else {
            panic!("the capture starts with the victim's Hello")
        };
        let theirs = hello
            .party_message
            .expect("a keyed victim sends its message");
        let (exchange, _) = PartyExchange::start_with_rng(
            &self.binding,
            &tls::party_key(guess),
            Role::Server,
            Replayable::new(&self.seed),
        );
        let confirmations = exchange.finish(&theirs).expect("a well-formed message");
        holds(&self.sent, &confirmations.expected.0) || holds(&self.sent, &confirmations.ours.0)
    }

    /// Every request frame the victim sent.
    fn requests(&self) -> Vec<Request> {
        let mut rest = &self.sent[..];
        let mut out = Vec::new();
        while let Ok(Some((request, used))) = Request::decode(rest) {
            out.push(request);
            rest = &rest[used..];
        }
        out
    }
}

/// A fake server (its own identity, real TLS) that a real keyed peer dials:
/// it answers the victim's Hello as the best attacker would, with a key
/// exchange message and confirmation made under `online_guess`, and
/// records everything the victim sends on that connection for a while.
async fn capture_a_keyed_victim(online_guess: &str) -> ServerCapture {
    let identity = Identity::ephemeral();
    let endpoint = bind_endpoint(
        "127.0.0.1:0".parse().unwrap(),
        Some(tls::server_config(&identity).unwrap()),
    )
    .unwrap();
    let fake = format!("{}@{}", identity.peer_id(), endpoint.local_addr().unwrap());

    let dir = tempfile::tempdir().unwrap();
    let mut config = local_config(&dir.path().join("games"), &dir.path().join("data"));
    std::fs::create_dir_all(&config.games_dir).unwrap();
    config.party_key = Some(TRUE_KEY.into());
    config.peers = vec![fake];
    let victim = Peer::start(config).await;

    let incoming = tokio::time::timeout(Duration::from_secs(10), endpoint.accept())
        .await
        .expect("the victim dials")
        .unwrap();
    let connection = incoming.await.unwrap();
    let mut old_binding = [0u8; 32];
    connection
        .export_keying_material(&mut old_binding, b"EXPORTER-lanspread-party", b"client")
        .unwrap();
    let binding = party_binding(&connection).unwrap();
    let seed = format!("fake server guessing {online_guess}");

    let mut sent = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(3);
    while let Ok(Ok((mut send, mut recv))) =
        tokio::time::timeout_at(deadline.into(), connection.accept_bi()).await
    {
        let Ok(Ok(bytes)) =
            tokio::time::timeout_at(deadline.into(), recv.read_to_end(1 << 16)).await
        else {
            break;
        };
        if let Ok(Some((Request::Hello(hello), _))) = Request::decode(&bytes) {
            let mut answer = Hello {
                protocol_version: PROTOCOL_VERSION,
                peer_id: identity.peer_id().to_string(),
                display_name: "fake".into(),
                library_digest: Hash([0x66; 32]),
                party_message: None,
                party_confirmation: None,
                listen_port: 0,
                record_version: 1,
            };
            if let Some(theirs) = hello.party_message.as_deref() {
                let (exchange, ours) = PartyExchange::start_with_rng(
                    &binding,
                    &tls::party_key(online_guess),
                    Role::Server,
                    Replayable::new(&seed),
                );
                answer.party_message = Some(ours);
                answer.party_confirmation = exchange.finish(theirs).map(|c| c.ours);
            }
            let _ = send.write_all(&Response::Hello(answer).encode()).await;
        } else if let Ok(Some((Request::PartyConfirm { .. }, _))) = Request::decode(&bytes) {
            let _ = send.write_all(&Response::Ok.encode()).await;
        }
        let _ = send.finish();
        sent.extend(bytes);
    }
    stop([&victim.handle]).await;
    ServerCapture {
        sent,
        old_binding,
        binding,
        seed,
    }
}

/// Attack: a keyed peer dials a fake server (any address it is told of),
/// which records what the peer sends and tests dictionary keys against it
/// offline. On the old design the Hello carried `keyed_hash(K, EKM)`, which
/// told the true key from a wrong one at millions of guesses a second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fake_server_cannot_test_party_key_guesses_offline() {
    let capture = capture_a_keyed_victim(WRONG_KEY).await;
    assert!(!capture.sent.is_empty(), "the victim said nothing");

    // The old design's offline check tells nothing apart.
    assert_eq!(
        capture.old_proof_found(TRUE_KEY),
        capture.old_proof_found(WRONG_KEY),
        "the old proof's check tells the true key from a wrong one"
    );
    assert!(!capture.old_proof_found(TRUE_KEY));
    // Nor does the new design's, for any key but the one guessed online
    // (here a wrong one): the victim refused the fake server's confirmation
    // and sent nothing derived from its key.
    assert!(!capture.confirmation_found(TRUE_KEY));
    assert!(!capture.confirmation_found(WRONG_KEY));
    assert!(
        !capture
            .requests()
            .iter()
            .any(|r| matches!(r, Request::PartyConfirm { .. })),
        "the victim confirmed to a server that did not prove the key"
    );

    // The control: had the fake server guessed right online, the same check
    // finds the key (so the check is not blind), and only that key.
    let lucky = capture_a_keyed_victim(TRUE_KEY).await;
    assert!(lucky.confirmation_found(TRUE_KEY));
    assert!(!lucky.confirmation_found(WRONG_KEY));
    assert!(!lucky.old_proof_found(TRUE_KEY));
}

/// A raw TLS connection from `client` to `addr`, with the handshake left to
/// the test.
async fn dial(client: &HostileClient, addr: SocketAddr) -> quinn::Connection {
    let config = tls::client_config(&client.identity, None, Default::default()).unwrap();
    client
        .endpoint
        .connect_with(config, addr, tls::SERVER_NAME)
        .unwrap()
        .await
        .unwrap()
}

/// The victim server's answer to a Hello whose exchange message was made
/// under `guess` with the replayable secret `seed`.
async fn hello_with_guess(
    client: &HostileClient,
    connection: &quinn::Connection,
    guess: &str,
    seed: &str,
) -> (Hello, [u8; 32]) {
    let binding = party_binding(connection).unwrap();
    let (_, message) = PartyExchange::start_with_rng(
        &binding,
        &tls::party_key(guess),
        Role::Client,
        Replayable::new(seed),
    );
    let hello = Hello {
        protocol_version: PROTOCOL_VERSION,
        peer_id: client.identity.peer_id().to_string(),
        display_name: "guesser".into(),
        library_digest: Hash([0; 32]),
        party_message: Some(message),
        party_confirmation: None,
        listen_port: 0,
        record_version: 1,
    };
    match request(connection, &Request::Hello(hello)).await {
        Ok(Response::Hello(theirs)) => (theirs, binding),
        other => panic!("the victim answers a well-formed Hello: {other:?}"),
    }
}

/// Offline, with what a victim server answered: finish the exchange under
/// `candidate` with the attacker's replayed secret and compare the server's
/// confirmation.
fn server_confirms(theirs: &Hello, binding: &[u8; 32], candidate: &str, seed: &str) -> bool {
    let (exchange, _) = PartyExchange::start_with_rng(
        binding,
        &tls::party_key(candidate),
        Role::Client,
        Replayable::new(seed),
    );
    let confirmations = exchange
        .finish(
            theirs
                .party_message
                .as_deref()
                .expect("a keyed server's message"),
        )
        .expect("a well-formed message");
    theirs.party_confirmation == Some(confirmations.expected)
}

fn is_party_refusal(result: &Result<Response, lanspread_peer::net::client::RequestError>) -> bool {
    use lanspread_peer::net::client::RequestError;
    match result {
        Err(RequestError::Remote { code, .. }) => *code == ErrorCode::PartyKey,
        Err(RequestError::Connection(quinn::ConnectionError::ApplicationClosed(close))) => {
            close.error_code == quinn::VarInt::from_u32(close_code::PARTY_KEY)
        }
        _ => false,
    }
}

/// Attack: a fake client guesses the key of a keyed victim server. It gets
/// nothing served before a confirmation that needs the key, the server's
/// answer lets it check only the guess it made online, and a wrong
/// confirmation ends the connection: one guess per connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fake_client_gets_one_guess_per_connection_and_nothing_served() {
    let dir = tempfile::tempdir().unwrap();
    let games = dir.path().join("games");
    small_game(&games, "arena");
    let mut config = local_config(&games, &dir.path().join("data"));
    config.party_key = Some(TRUE_KEY.into());
    config.library_quiet_period = Duration::from_millis(300);
    let mut victim = Peer::start(config).await;
    victim.indexed("arena").await;
    let addr = victim.handle.local_addr();
    let attacker = HostileClient::new();

    // 1. A wrong guess; the attacker skips its confirmation and asks for
    //    the game list. Refused, and the connection ends.
    let connection = dial(&attacker, addr).await;
    let (theirs, binding) = hello_with_guess(&attacker, &connection, WRONG_KEY, "one").await;
    let listed = request(&connection, &Request::ListGames).await;
    assert!(is_party_refusal(&listed), "{listed:?}");
    assert!(matches!(
        request(&connection, &Request::ListGames).await,
        Err(lanspread_peer::net::client::RequestError::Connection(_))
    ));
    // Offline, the answer does not tell the true key from wrong ones: it
    // matches no candidate, the true one included.
    for candidate in [TRUE_KEY, WRONG_KEY, "lan-2027"] {
        assert!(
            !server_confirms(&theirs, &binding, candidate, "one"),
            "{candidate} checked offline"
        );
    }

    // 2. The control: guessing right online, the same check confirms the
    //    key, and only that one. Each connection tests one guess.
    let connection = dial(&attacker, addr).await;
    let (theirs, binding) = hello_with_guess(&attacker, &connection, TRUE_KEY, "two").await;
    assert!(server_confirms(&theirs, &binding, TRUE_KEY, "two"));
    assert!(!server_confirms(&theirs, &binding, WRONG_KEY, "two"));
    connection.close(0u32.into(), b"done");

    // 3. A wrong confirmation: refused, the connection closed, so a second
    //    try on it is impossible.
    let connection = dial(&attacker, addr).await;
    let (_, _) = hello_with_guess(&attacker, &connection, WRONG_KEY, "three").await;
    let wrong = Request::PartyConfirm {
        confirmation: Hash([7; 32]),
    };
    assert!(is_party_refusal(&request(&connection, &wrong).await));
    assert!(request(&connection, &wrong).await.is_err());

    // 4. A keyed client with the right key still gets in and is served.
    let guest = attacker
        .connect(addr, None, Some(TRUE_KEY), 0)
        .await
        .unwrap();
    assert!(matches!(
        guest.request(&Request::ListGames).await,
        Ok(Response::Games(games)) if games.len() == 1
    ));
    stop([&victim.handle]).await;
}
