//! The README's first command works: the shipped demo registers (OB and CDR), gets a token through the
//! proxy that is bound to the TPP's certificate, finds the registration's audit line, reads the registration
//! back, and registers again with a request JWT made the way `./demo.sh sign-request` makes one. It uses fixed ports (8443, 8444, 9080) and .local/, so both
//! profiles run in one test, one after the other.

mod support;

#[tokio::test]
async fn the_demo_registers_and_manages_a_client_for_both_profiles() {
    for cdr in [false, true] {
        let o = support::demo::run(cdr, true)
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
        // Let the first run's upstream process exit and free its fixed port.
        tokio::time::sleep(std::time::Duration::from_millis(1000)).await;
    }
}
