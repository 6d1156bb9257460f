// swift-tools-version:5.9
// The Swift package of sage-queue: the module SageQueueFFI (the bindings UniFFI generates from
// src/sage_queue.udl, plus Sources/SageQueueFFI/Queue.swift), linked to the Rust library.
//
// The generated files are never committed: `bash bindings/swift/build.sh` builds the Rust
// library (cargo build --release) and writes them before it runs `swift build`:
//   Sources/SageQueueFFIRaw/module.modulemap, sage_queueFFI.h   the C declarations (FFI)
//   Sources/SageQueueFFI/Generated/SageQueueFFI.swift          the generated bindings
// The Rust library is linked from the repository's target/release (SAGE_QUEUE_LIB_DIR, when
// set while the manifest is read, names another folder holding libsage_queue.so), and found
// there at run time (rpath).
import Foundation
import PackageDescription

let here = Context.packageDirectory
let rustLibDir = Context.environment["SAGE_QUEUE_LIB_DIR"]
    ?? URL(fileURLWithPath: here).appendingPathComponent("../../target/release").standardizedFileURL.path

if !FileManager.default.fileExists(atPath: here + "/Sources/SageQueueFFIRaw/module.modulemap") {
    fatalError("the generated sources are missing: run `bash bindings/swift/build.sh` first")
}

let package = Package(
    name: "SageQueue",
    products: [
        .library(name: "SageQueueFFI", targets: ["SageQueueFFI"]),
    ],
    targets: [
        // The C header and module map of the generated FFI (module SageQueueFFIRaw).
        .systemLibrary(name: "SageQueueFFIRaw"),
        .target(
            name: "SageQueueFFI",
            dependencies: ["SageQueueFFIRaw"],
            linkerSettings: [
                .linkedLibrary("sage_queue"),
                .unsafeFlags(["-L", rustLibDir, "-Xlinker", "-rpath", "-Xlinker", rustLibDir]),
            ]
        ),
        // The Swift peer of tests/interop/run.py (its source is tests/interop/peer.swift).
        .executableTarget(name: "sage-queue-interop-peer", dependencies: ["SageQueueFFI"]),
        // Timings (put+get, loans and views, async): swift build -c release, then
        // .build/release/sage-queue-bench.
        .executableTarget(name: "sage-queue-bench", dependencies: ["SageQueueFFI", "SageQueueFFIRaw"]),
        .testTarget(name: "SageQueueFFITests", dependencies: ["SageQueueFFI"]),
    ]
)
