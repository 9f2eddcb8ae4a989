import EventLogWire
import Foundation
import TestSupport

/// An `eventlogd` child process on 127.0.0.1 with an ephemeral port, for tests that signal, kill
/// or measure the real executable.
final class ServerProcess: @unchecked Sendable {
    // @unchecked: `process` and the pipes are only used from the test that owns this object.
    let process: Subprocess
    let port: Int
    let databasePath: String
    private let stderrLines: Locked<[String]>
    /// Reads the server's standard error for as long as the process runs (its thread holds the pipe).
    private let stderrReader: PipeReader

    /// The built `eventlogd` beside the test bundle (the same build directory).
    static var executableURL: URL { builtExecutable("eventlogd") }

    /// An executable of this package, built beside the test bundle (the test target depends on it, so
    /// `swift test` builds it first).
    static func builtExecutable(_ name: String) -> URL {
        let testBinary = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath()
        var directory = testBinary.deletingLastPathComponent()
        for _ in 0..<4 {
            let candidate = directory.appendingPathComponent(name)
            if FileManager.default.isExecutableFile(atPath: candidate.path) { return candidate }
            directory = directory.deletingLastPathComponent()
        }
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent()
        return root.appendingPathComponent(".build/debug/\(name)")
    }

    /// Starts eventlogd on `databasePath` and waits until it listens. With `port` nil, no --port flag is given
    /// (for `environment` to set). The server sees `environment` and no other `EVENTLOG_*` variable.
    init(
        databasePath: String, port: Int? = 0, arguments: [String] = [], environment: [String: String] = [:]
    ) throws {
        self.databasePath = databasePath
        let process = Subprocess()
        process.executableURL = ServerProcess.executableURL
        process.arguments =
            ["--host", "127.0.0.1"] + (port.map { ["--port", String($0)] } ?? []) + ["--db", databasePath] + arguments
        process.environment = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("EVENTLOG_") }
            .merging(environment) { $1 }
        let errorPipe = Pipe()
        process.standardError = errorPipe
        process.standardOutput = FileHandle.nullDevice
        let lines = Locked<[String]>([])
        let listening = Locked<Int?>(nil)
        let buffer = Locked("")
        try process.run()
        let reader = PipeReader(errorPipe.fileHandleForReading) { data in
            let complete = buffer.withLock { text -> [String] in
                text += String(decoding: data, as: UTF8.self)
                var parts = text.components(separatedBy: "\n")
                text = parts.removeLast()
                return parts
            }
            lines.withLock { $0.append(contentsOf: complete) }
            for line in complete where line.contains("listening") {
                if let range = line.range(of: "port=") {
                    let digits = line[range.upperBound...].prefix { $0.isNumber }
                    listening.withLock { $0 = Int(digits) }
                }
            }
        }
        self.process = process
        self.stderrReader = reader
        self.stderrLines = lines
        let deadline = Date().addingTimeInterval(30)
        while listening.withLock({ $0 }) == nil {
            guard process.isRunning, Date() < deadline else {
                process.terminate()
                throw ServerProcessError.didNotStart(lines.withLock { $0 }.joined(separator: "\n"))
            }
            Thread.sleep(forTimeInterval: 0.02)
        }
        self.port = listening.withLock { $0 } ?? 0
    }

    var pid: Int32 { process.processIdentifier }

    /// What the server logged so far.
    var log: [String] { stderrLines.withLock { $0 } }

    /// Sends a signal.
    func signal(_ number: Int32) {
        kill(process.processIdentifier, number)
    }

    /// Waits for the process to exit (bounded) and returns its status, or nil on timeout.
    func waitForExit(timeout: TimeInterval = 30) async -> Int32? {
        let deadline = Date().addingTimeInterval(timeout)
        while process.isRunning {
            if Date() > deadline { return nil }
            try? await Task.sleep(for: .milliseconds(20))
        }
        return process.terminationStatus
    }

    /// Kills the process if it still runs.
    func kill9() {
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        process.waitUntilExit()
    }

    deinit {
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
        }
    }
}

enum ServerProcessError: Error {
    case didNotStart(String)
}
