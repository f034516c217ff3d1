//! The README's first command works: the shipped demo registers (OB and CDR), gets a token through the
//! proxy and reads the registration back. It uses fixed ports (8443, 8444, 9080) and .local/, so both
//! profiles run in one test, one after the other.

mod support;

#[tokio::test]
async fn the_demo_registers_and_manages_a_client_for_both_profiles() {
    for cdr in [false, true] {
        let o = support::demo::run(cdr, true)
            .await
            .unwrap_or_else(|e| panic!("demo (cdr: {cdr}) failed: {e}"));
        assert_eq!((o.register, o.token, o.read), (201, 200, 200), "cdr: {cdr}");
        // Let the first run's upstream process exit and free its fixed port.
        tokio::time::sleep(std::time::Duration::from_millis(1000)).await;
    }
}
