//! The README's first command works: the demo's steps, with the shipped proxy.toml and
//! deploy/examples/proxy-cdr.toml, register a client (OB and CDR), get a token through the proxy that is bound to
//! the TPP's certificate, find the registration's audit line, read the registration back, and register again with a
//! request JWT made the way `./demo.sh sign-request` makes one. Each run takes a temp dir and free ports (the
//! shipped config retargeted there), so the test also passes while ./demo.sh is running, and leaves its .local/ alone.

mod support;

async fn demo_works(cdr: bool) {
    let o = support::demo::run_isolated(cdr)
        .await
        .unwrap_or_else(|e| panic!("demo (cdr: {cdr}) failed: {e}"));
    assert_eq!((o.register, o.token, o.read), (201, 200, 200), "cdr: {cdr}");
    assert!(
        o.bound,
        "cdr: {cdr}: the token's cnf.x5t#S256 is the certificate's"
    );
    assert!(
        o.audited,
        "cdr: {cdr}: the registration's audit line names the certificate"
    );
    assert_eq!(
        o.signed_request, 201,
        "cdr: {cdr}: a sign-request JWT registers"
    );
}

#[tokio::test]
async fn the_demo_registers_and_manages_an_ob_client() {
    demo_works(false).await;
}

#[tokio::test]
async fn the_demo_registers_and_manages_a_cdr_client() {
    demo_works(true).await;
}
