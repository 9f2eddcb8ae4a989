import ArgumentParser
import EventLog
import EventLogClient
import EventLogCommandLine
import Foundation

/// `eventlog`: replay, tail and publish events, on a database file or through a server.
@main
struct EventLogCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "eventlog",
        abstract: "Replay, tail and publish the events of an eventlog, from its database file or a server.",
        discussion: """
            Every command works on a database file (--db PATH: read-only, safe beside a running eventlogd, never \
            blocks it), on a PostgreSQL log (--db postgres://user@host:port/dbname, shared with the eventlogd nodes) \
            or on a server (--server URL); when the command line gives neither, their environment \
            variables can. A server with access control needs --token (a JWT or an API key; `eventlog token` \
            makes them). Exit status: 0 on success, 1 for an error (one line on stderr, a server's refusal with its \
            message), 2 for a usage error.

            \(OptionEnvironment.ruleDescription)
            """,
        version: CommandLineTool.version,
        subcommands: [Replay.self, Tail.self, Publish.self, Topics.self, Stats.self, Token.self]
    )

    /// Runs with the exit statuses every eventlog tool shares; `--db`, `--server` and `--token` also read their
    /// variables (`--db` and `--server` as alternatives: one on the command line keeps the other's variable out).
    static func main() async {
        await CommandLineTool.main(
            Self.self, environment: .options(["db", "server", "token"], alternatives: ["db", "server"]),
            describe: UserError.describe)
    }
}

/// An error the user can fix; printed as one line, exit status 1.
struct UserError: Error {
    let message: String

    init(_ message: String) { self.message = message }

    /// A one-line description of any error.
    static func describe(_ error: Error) -> String {
        if let error = error as? UserError { return error.message }
        if let error = error as? EventLogError { return error.message }
        if let error = error as? EventLogClientError { return error.description }
        return "\(error)"
    }
}

/// Where the events come from: `--db PATH` or `--server URL`.
struct SourceOptions: ParsableArguments {
    @Option(
        name: .customLong("db"), help: "The database file, or a PostgreSQL URL (opened read-only unless publishing).")
    var databasePath: String?

    @Option(help: "A server's base URL, e.g. http://127.0.0.1:8080.")
    var server: String?

    @Option(help: "The bearer token (a JWT or an API key) sent to the server; ignored with --db.")
    var token: String?

    func validate() throws {
        if (databasePath == nil) == (server == nil) {
            throw ValidationError("give exactly one of --db PATH or --server URL")
        }
    }

    /// Opens the source.
    func open(readOnly: Bool = true) async throws -> LogSource {
        if let server {
            var configuration = EventLogClient.Configuration()
            configuration.token = token
            return .server(EventLogClient(baseURL: server, configuration: configuration))
        }
        guard let path = databasePath else { throw UserError("give --db PATH or --server URL") }
        guard EventLog.isPostgresURL(path) || FileManager.default.fileExists(atPath: path) || !readOnly else {
            throw UserError("no database at \(path)")
        }
        var options = EventLog.Options()
        options.readOnly = readOnly
        options.readers = 1
        options.logger.logLevel = .error
        do {
            return .database(try await EventLog.open(path: path, options: options))
        } catch {
            // PostgreSQL's errors name the (redacted) URL themselves; a file's do not.
            guard EventLog.isPostgresURL(path) else {
                throw UserError("cannot open \(path): \(UserError.describe(error))")
            }
            throw UserError(UserError.describe(error))
        }
    }
}

/// An open log or server.
enum LogSource {
    case database(EventLog)
    case server(EventLogClient)

    /// A page of events after `position`.
    func page(after position: Int64, topics: [String], limit: Int) async throws -> (events: [Event], next: Int64) {
        switch self {
        case .database(let log):
            let page = try await log.read(after: position, selectors: try SelectorSet(parsing: topics), limit: limit)
            return (page.events, page.next)
        case .server(let client):
            let query =
                topics.map { "topic=\(percentEncode($0))" } + ["after=\(position)", "limit=\(min(limit, 1000))"]
            let page = try await client.historyPage(query)
            return (page.events, page.next)
        }
    }

    /// Hands the events of a replay from `start` to `body` in id order, a page at a time, until `body` returns
    /// `false` or the replay reached the head. Returns the position a tail of a file goes on from (the last page's
    /// `next`), `nil` when `body` stopped it or the events came from a server.
    ///
    /// From a file: history pages, snapshot pages (``EventLog/readSnapshot(after:selectors:limit:)``), or pages
    /// after the rewound position. From a server: history pages for `after`; the snapshot and a rewind come from a
    /// subscription that starts there and ends at its `caughtup`, so any server that streams them can replay them.
    @discardableResult
    func replay(
        from start: ReplayStart, topics: [String], _ body: ([Event]) async throws -> Bool
    ) async throws -> Int64? {
        let pageSize = 1000
        switch (self, start) {
        case (.database(let log), .after(var position)):
            let selectors = try SelectorSet(parsing: topics)
            while true {
                let page = try await log.read(after: position, selectors: selectors, limit: pageSize)
                if page.events.isEmpty { return page.next }
                guard try await body(page.events) else { return nil }
                position = page.next
            }
        case (.database(let log), .snapshot):
            let selectors = try SelectorSet(parsing: topics)
            var position: Int64 = 0
            while true {
                let page = try await log.readSnapshot(after: position, selectors: selectors, limit: pageSize)
                if !page.events.isEmpty {
                    guard try await body(page.events) else { return nil }
                }
                // A page that is not full ends the snapshot; the tail goes on from its `next`.
                if page.events.count < pageSize { return page.next }
                position = page.next
            }
        case (.database(let log), .rewind(let count)):
            let position = try await log.position(rewinding: count, selectors: try SelectorSet(parsing: topics))
            return try await self.replay(from: .after(position), topics: topics, body)
        case (.server, .after(var position)):
            while true {
                let page = try await self.page(after: position, topics: topics, limit: pageSize)
                if page.events.isEmpty { return nil }
                guard try await body(page.events) else { return nil }
                position = page.next
            }
        case (.server(let client), .snapshot), (.server(let client), .rewind):
            let from: StartPosition
            if case .rewind(let count) = start { from = .rewind(count) } else { from = .snapshot }
            var events: [Event] = []
            for try await element in client.subscribe(topics: topics, from: from) {
                switch element {
                case .event(let event):
                    events.append(event)
                    if events.count == pageSize {
                        guard try await body(events) else { return nil }
                        events.removeAll(keepingCapacity: true)
                    }
                case .caughtUp:
                    if !events.isEmpty { _ = try await body(events) }
                    return nil
                case .gap(let requested, let earliest):
                    warnGap(requested: requested, earliest: earliest)
                case .reset(_, let head, let epoch):
                    warnReset(head: head, epoch: epoch)
                case .reconnecting(_, let reason):
                    // A replay is one answer: a dropped connection is an error, as for a history page.
                    throw UserError(reason)
                case .opened:
                    break
                }
            }
            throw UserError("the server ended the stream before the replay caught up")
        }
    }

    /// The newest `count` matching events.
    func latest(_ count: Int, topics: [String]) async throws -> [Event] {
        switch self {
        case .database(let log):
            return try await log.readLatest(count, selectors: try SelectorSet(parsing: topics))
        case .server(let client):
            let query = topics.map { "topic=\(percentEncode($0))" } + ["last=\(min(max(count, 1), 1000))"]
            return try await client.historyPage(query).events
        }
    }

    func close() async {
        if case .database(let log) = self { await log.close() }
    }
}

/// Where `eventlog replay` starts.
enum ReplayStart: Equatable {
    /// After this id.
    case after(Int64)
    /// The newest event of each key, in id order (`--latest`).
    case snapshot
    /// The last `count` matching events (`--rewind`).
    case rewind(Int)
}

/// The message of a server error answer, or its status.
func serverMessage(_ response: RawResponse) -> String {
    if let error = ErrorBody(decoding: response.body) {
        return "server answered \(response.status): \(error.message)"
    }
    return "server answered \(response.status)"
}

func percentEncode(_ text: String) -> String {
    var allowed = CharacterSet.alphanumerics
    allowed.insert(charactersIn: "-._~/:@!$+=")
    allowed.remove(charactersIn: "+")
    return text.addingPercentEncoding(withAllowedCharacters: allowed) ?? text
}

extension EventLogClient {
    /// One history page through the client, decoded exactly as the server sent it.
    func historyPage(_ query: [String]) async throws -> EventLog.Page {
        let response = try await send(
            method: "GET", path: "/v1/events?" + query.joined(separator: "&"),
            headers: [(name: "Accept", value: "application/json")])
        guard response.status == 200 else { throw UserError(serverMessage(response)) }
        return try HistoryPage(decoding: response.body)
    }
}

/// Tells stderr that a subscription skipped events retention removed.
func warnGap(requested: Int64, earliest: Int64) {
    FileHandle.standardError.write(
        Data("eventlog: gap: events after \(requested) before \(earliest) were removed\n".utf8))
}

/// Tells stderr that the server's log is another one (a restore, another epoch).
func warnReset(head: Int64, epoch: String) {
    FileHandle.standardError.write(
        Data("eventlog: reset: the server's log changed (epoch \(epoch), head \(head))\n".utf8))
}
