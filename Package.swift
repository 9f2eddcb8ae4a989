// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "eventlog",
    platforms: [.macOS(.v15)],
    products: [
        .library(name: "EventLogWire", targets: ["EventLogWire"]),
        .library(name: "EventLog", targets: ["EventLog"]),
        .library(name: "EventLogServer", targets: ["EventLogServer"]),
        .library(name: "EventLogClient", targets: ["EventLogClient"]),
        .library(name: "EventLogAuth", targets: ["EventLogAuth"]),
        .executable(name: "eventlogd", targets: ["eventlogd"]),
        .executable(name: "eventlog", targets: ["eventlog"]),
        .executable(name: "eventlog-bench", targets: ["eventlog-bench"]),
        .executable(name: "eventlog-maint", targets: ["eventlog-maint"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio", exact: "2.101.3"),
        .package(url: "https://github.com/apple/swift-argument-parser", exact: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", exact: "1.16.2"),
        .package(url: "https://github.com/apple/swift-crypto", exact: "4.5.2"),
        .package(url: "https://github.com/vapor/jwt-kit", exact: "5.8.0"),
        .package(url: "https://github.com/x-sheep/swift-property-based", exact: "2.0.1"),
    ],
    targets: [
        .systemLibrary(
            name: "CSQLite",
            pkgConfig: "sqlite3",
            providers: [.apt(["libsqlite3-dev"])]
        ),
        .systemLibrary(
            name: "CLibPQ",
            pkgConfig: "libpq",
            providers: [.apt(["libpq-dev"])]
        ),
        .target(name: "EventLogWire"),
        .target(
            name: "EventLog",
            dependencies: [
                "EventLogWire",
                "CSQLite",
                "CLibPQ",
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .target(
            name: "EventLogAuth",
            dependencies: [
                "EventLogWire",
                .product(name: "JWTKit", package: "jwt-kit"),
                .product(name: "Crypto", package: "swift-crypto"),
            ]
        ),
        .target(
            name: "EventLogServer",
            dependencies: [
                "EventLog",
                "EventLogAuth",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOWebSocket", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Crypto", package: "swift-crypto"),
            ]
        ),
        .target(
            name: "EventLogClient",
            dependencies: [
                "EventLogWire",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOWebSocket", package: "swift-nio"),
            ]
        ),
        .target(
            name: "EventLogCommandLine",
            dependencies: [.product(name: "ArgumentParser", package: "swift-argument-parser")]
        ),
        .executableTarget(
            name: "eventlogd",
            dependencies: [
                "EventLogServer",
                "EventLogAuth",
                "EventLogCommandLine",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .executableTarget(
            name: "eventlog",
            dependencies: [
                "EventLog",
                "EventLogAuth",
                "EventLogClient",
                "EventLogCommandLine",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        .executableTarget(
            name: "eventlog-bench",
            dependencies: [
                "CSQLite",
                "EventLogWire",
                "EventLogAuth",
                "EventLog",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            path: "tools/eventlog-bench"
        ),
        .executableTarget(
            name: "eventlog-maint",
            dependencies: [
                "EventLog",
                "EventLogCommandLine",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            path: "tools/eventlog-maint"
        ),
        // Launching child processes in tests without Foundation's Process (see Subprocess.swift).
        // Also the PostgreSQL fixture every test target that needs a server shares (PostgresFixtures.swift).
        .target(name: "TestSupport", dependencies: ["EventLog"], path: "Tests/TestSupport"),
        // A test target that runs a built tool lists the tool, so `swift test` builds it first.
        .testTarget(
            name: "CLITests",
            dependencies: [
                "EventLogWire", "EventLog", "EventLogCommandLine",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                "eventlogd", "eventlog", "eventlog-maint", "TestSupport",
            ]
        ),
        .testTarget(
            name: "EventLogAuthTests",
            dependencies: [
                "EventLogAuth", "EventLogWire",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "_CryptoExtras", package: "swift-crypto"),
            ]
        ),
        .testTarget(
            name: "EventLogWireTests",
            dependencies: ["EventLogWire"]
        ),
        .testTarget(
            name: "MaintenanceTests",
            dependencies: ["EventLog", "eventlog-maint", "TestSupport"]
        ),
        .testTarget(
            name: "EventLogTests",
            dependencies: ["EventLog", "TestSupport"]
        ),
        .testTarget(
            name: "EventLogServerTests",
            dependencies: [
                "EventLogServer", "EventLogClient", "EventLog", "EventLogWire", "EventLogAuth", "eventlogd", "eventlog",
                "eventlog-maint", "TestSupport",
                .product(name: "PropertyBased", package: "swift-property-based"),
            ]
        ),
        .testTarget(
            name: "EventLogClientTests",
            dependencies: ["EventLogClient", "EventLogWire"]
        ),
    ],
    swiftLanguageModes: [.v6]
)
