//! Generates the UniFFI scaffolding from the one UDL file.
fn main() {
    uniffi::generate_scaffolding("src/sage_queue.udl").expect("UDL scaffolding");
}
