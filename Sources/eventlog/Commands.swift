import ArgumentParser
import EventLog
import EventLogClient
import Foundation

/// How events are printed.
enum OutputFormat: String, ExpressibleByArgument, CaseIterable {
    /// One JSON envelope per line (the default when stdout is not a terminal).
    case jsonl
    /// Aligned columns (the default on a terminal).
    case table
    /// The exact SSE frames a subscriber would get.
    case sse

    static var automatic: OutputFormat { isatty(STDOUT_FILENO) == 1 ? .table : .jsonl }
}

/// How `topics` prints: the list of topics has no SSE form, so only these two.
enum TopicsFormat: String, ExpressibleByArgument, CaseIterable {
    /// One JSON object per line.
    case jsonl
    /// Aligned columns.
    case table

    /// The list's form of an event output format.
    init(_ format: OutputFormat) { self = format == .table ? .table : .jsonl }
}

/// Which events: selectors and bounds shared by replay and tail.
struct SelectionOptions: ParsableArguments {
    @Option(name: .customLong("topic"), help: "A topic selector (orders/1, orders/*, *); repeatable. Default *.")
    var topics: [String] = []

    @Option(help: "Output format. Default: table on a terminal, jsonl otherwise.")
    var format: OutputFormat?

    var selectors: [String] { topics.isEmpty ? ["*"] : topics }

    func validate() throws {
        do {
            _ = try SelectorSet(parsing: selectors)
        } catch {
            throw ValidationError(error.message)
        }
    }
}

/// Writes events to stdout in one format.
struct EventPrinter {
    let format: OutputFormat
    private var out = FileHandle.standardOutput

    init(format: OutputFormat) { self.format = format }

    func print(_ events: [Event]) {
        guard !events.isEmpty else { return }
        var text = ""
        switch format {
        case .jsonl:
            for event in events { text += EventEnvelope.encode(event) + "\n" }
        case .sse:
            for event in events { SSEEncoder.writeEvent(event, envelope: false, into: &text) }
        case .table:
            let idWidth = max(2, events.map { String($0.id).count }.max() ?? 2)
            let topicWidth = min(40, max(5, events.map(\.topic.count).max() ?? 5))
            let typeWidth = min(24, max(4, events.map(\.type.count).max() ?? 4))
            for event in events {
                let shown = event.data?.text ?? "null"
                text +=
                    pad(String(event.id), idWidth, right: true) + "  " + event.timeText + "  "
                    + pad(event.topic, topicWidth) + "  " + pad(event.type, typeWidth) + "  "
                    + oneLine(shown, 80) + "\n"
            }
        }
        out.write(Data(text.utf8))
    }

    private func pad(_ text: String, _ width: Int, right: Bool = false) -> String {
        let clipped = text.count > width ? String(text.prefix(width - 1)) + "…" : text
        let fill = String(repeating: " ", count: max(0, width - clipped.count))
        return right ? fill + clipped : clipped + fill
    }

    private func oneLine(_ text: String, _ width: Int) -> String {
        let flat = text.replacingOccurrences(of: "\r", with: "\\r").replacingOccurrences(of: "\n", with: "\\n")
        return flat.count > width ? String(flat.prefix(width - 1)) + "…" : flat
    }
}

/// Parses `2026-11-25T01:07:15Z` or a relative age (`90s`, `15m`, `2h`, `7d`) into milliseconds since 1970.
func parseTime(_ text: String, name: String) throws -> Int64 {
    if let absolute = Timestamp.parseRFC3339(text) { return absolute }
    if let age = parseAge(text) { return Timestamp.nowMilliseconds() - age }
    throw ValidationError("\(name) must be an RFC 3339 time or an age like 2h, not \(text)")
}

/// `90s`, `15m`, `2h`, `7d`, `500ms`, `1h30m` (``DurationText``) in milliseconds.
func parseAge(_ text: String) -> Int64? {
    (try? DurationText.parse(text))?.wholeMilliseconds
}

extension EventLogCommand {
    /// `eventlog replay`: history, in id order.
    struct Replay: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Print the events of the log, in id order.",
            discussion: """
                By default from the start of the retained log; --after or --from start elsewhere, --rewind N with \
                the last N events, and --latest prints the current state: the newest event of each key.
                """
        )

        @OptionGroup var source: SourceOptions
        @OptionGroup var selection: SelectionOptions

        @Option(help: "Start after this id (exclusive).")
        var after: Int64?

        @Option(help: "Start at this id (inclusive).")
        var from: Int64?

        @Flag(
            help: """
                Print the newest event of each key (its topic for an event without one), in id order: the current \
                state.
                """)
        var latest = false

        @Option(help: "Start with the last N matching events, 1...1000000.")
        var rewind: Int?

        @Option(help: "Stop at this id (inclusive).")
        var until: Int64?

        @Option(help: "Only events committed at or after this time: RFC 3339 or an age like 2h.")
        var since: String?

        @Option(
            name: .customLong("until-time"), help: "Only events committed at or before this time (RFC 3339 or an age).")
        var untilTime: String?

        @Option(help: "Print at most this many events.")
        var limit: Int?

        func validate() throws {
            if after != nil && from != nil { throw ValidationError("give --after or --from, not both") }
            let starts = [
                after.map { _ in "--after" }, from.map { _ in "--from" }, latest ? "--latest" : nil,
                rewind.map { _ in "--rewind" },
            ].compactMap { $0 }
            if starts.count > 1 { throw ValidationError("give one start: \(starts.joined(separator: " or "))") }
            if latest && (since != nil || until != nil || untilTime != nil) {
                throw ValidationError("--latest prints the state now; give no --since, --until or --until-time")
            }
            if rewind != nil && since != nil { throw ValidationError("give --rewind or --since, not both") }
            if let rewind, !(1...StartPosition.maxRewind).contains(rewind) {
                throw ValidationError("--rewind must be in 1...\(StartPosition.maxRewind)")
            }
            if let after, after < 0 { throw ValidationError("--after must not be negative") }
            if let from, from < 1 { throw ValidationError("--from must be at least 1") }
            if let limit, limit < 1 { throw ValidationError("--limit must be at least 1") }
            if let since { _ = try parseTime(since, name: "--since") }
            if let untilTime { _ = try parseTime(untilTime, name: "--until-time") }
        }

        func run() async throws {
            let log = try await source.open()
            let printer = EventPrinter(format: selection.format ?? .automatic)
            let since = try self.since.map { try parseTime($0, name: "--since") }
            let untilTime = try self.untilTime.map { try parseTime($0, name: "--until-time") }
            let start: ReplayStart
            if latest {
                start = .snapshot
            } else if let rewind {
                start = .rewind(rewind)
            } else {
                start = .after(after ?? ((from ?? 1) - 1))
            }
            var remaining = limit ?? Int.max
            do {
                try await log.replay(from: start, topics: selection.selectors) { events in
                    var selected: [Event] = []
                    var done = false
                    for event in events {
                        if let until, event.id > until {
                            done = true
                            break
                        }
                        if let untilTime, event.time > untilTime {
                            // Commit times follow ids, so nothing later can match.
                            done = true
                            break
                        }
                        if let since, event.time < since { continue }
                        selected.append(event)
                        remaining -= 1
                        if remaining == 0 {
                            done = true
                            break
                        }
                    }
                    printer.print(selected)
                    return !done
                }
            } catch {
                await log.close()
                throw error
            }
            await log.close()
        }
    }

    /// `eventlog tail`: the newest events, then optionally follow.
    struct Tail: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Print the newest events; with -f, keep printing new ones as they are committed.")

        @OptionGroup var source: SourceOptions
        @OptionGroup var selection: SelectionOptions

        @Option(name: [.customShort("n"), .customLong("lines")], help: "How many of the newest events to print first.")
        var count = 10

        @Flag(name: [.customShort("f"), .customLong("follow")], help: "Keep printing new events (resumes by itself).")
        var follow = false

        @Flag(help: "First print the newest event of each key (the current state) instead of the last -n events.")
        var latest = false

        func validate() throws {
            if count < 0 || count > 1000 { throw ValidationError("-n must be in 0...1000") }
        }

        func run() async throws {
            let log = try await source.open()
            let printer = EventPrinter(format: selection.format ?? .automatic)
            if latest, follow, case .server(let client) = log {
                // One subscription: the snapshot, then the live tail on the same cursor (no gap, no duplicate).
                try await Self.follow(client.subscribe(topics: selection.selectors, from: .snapshot), printer)
                return
            }
            var snapshotEnd: Int64?
            var newest: [Event] = []
            if latest {
                snapshotEnd = try await log.replay(from: .snapshot, topics: selection.selectors) { events in
                    printer.print(events)
                    return true
                }
            } else {
                newest = count > 0 ? try await log.latest(count, topics: selection.selectors) : []
                printer.print(newest)
            }
            guard follow else {
                await log.close()
                return
            }
            switch log {
            case .database(let database):
                let bounds = try await database.refreshBounds()
                var position = snapshotEnd ?? newest.last?.id ?? bounds.head
                let selectors = try SelectorSet(parsing: selection.selectors)
                while true {
                    // A read-only log follows the file: refresh, read, and poll again shortly.
                    _ = try await database.refreshBounds()
                    let page = try await database.read(after: position, selectors: selectors, limit: 1000)
                    printer.print(page.events)
                    position = page.next
                    if page.events.isEmpty { try await Task.sleep(for: .milliseconds(200)) }
                }
            case .server(let client):
                let head = try await client.historyPage(["topic=*", "last=1"]).head
                let start = newest.last?.id ?? head
                try await Self.follow(client.subscribe(topics: selection.selectors, from: .after(start)), printer)
            }
        }

        /// Prints a subscription's events, and its notices on stderr, until it ends.
        static func follow(_ subscription: Subscription, _ printer: EventPrinter) async throws {
            for try await element in subscription {
                switch element {
                case .event(let event): printer.print([event])
                case .gap(let requested, let earliest):
                    warnGap(requested: requested, earliest: earliest)
                case .reset(_, let head, let epoch):
                    warnReset(head: head, epoch: epoch)
                case .reconnecting(let attempt, let reason):
                    FileHandle.standardError.write(
                        Data("eventlog: reconnecting (attempt \(attempt)): \(reason)\n".utf8))
                case .opened, .caughtUp: break
                }
            }
        }
    }

    /// `eventlog publish`: append events.
    struct Publish: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Publish an event (or an NDJSON batch from stdin) and print its id.",
            discussion: """
                With --server the event goes through the server's publish endpoint. With --db it is appended \
                to the file directly (the file's own lock keeps a running server safe; prefer --server then).
                """
        )

        @OptionGroup var source: SourceOptions

        @Option(help: "The topic.")
        var topic: String?

        @Option(help: "The event type. Default message.")
        var type: String?

        @Option(help: "The compaction key. Default: the topic.")
        var key: String?

        @Option(help: "The data: JSON text, @FILE for a file's JSON, or - for stdin. A JSON string is sent as text.")
        var data: String?

        @Option(help: "Makes a retry return the original id instead of appending again.")
        var idempotencyKey: String?

        @Option(
            name: .customLong("expect-last"),
            help: """
                Publish only if the topic's newest id is this one (0: the topic has no event); otherwise exit 1 \
                with its last id.
                """)
        var expectLast: Int64?

        @Flag(help: "Read an NDJSON batch from stdin (one publish object per line); all or nothing.")
        var ndjson = false

        func validate() throws {
            if ndjson {
                if topic != nil || data != nil || type != nil || key != nil || idempotencyKey != nil {
                    throw ValidationError("--ndjson takes the events from stdin; give no --topic/--type/--key/--data")
                }
                if expectLast != nil {
                    throw ValidationError("--ndjson lines carry their own \"expectedLastId\"; give no --expect-last")
                }
            } else if topic == nil {
                throw ValidationError("give --topic (or --ndjson)")
            }
            if let expectLast, expectLast < 0 { throw ValidationError("--expect-last must not be negative") }
        }

        func run() async throws {
            let events = try ndjson ? readBatch() : [singleEvent()]
            let log = try await source.open(readOnly: false)
            var ids: [Int64] = []
            do {
                switch log {
                case .database(let database):
                    ids = try await database.append(batch: events).map(\.event.id)
                case .server(let client):
                    let outgoing = events
                    if outgoing.count == 1, !ndjson {
                        ids = [try await client.publish(outgoing[0]).id]
                    } else {
                        ids = try await client.publish(batch: outgoing).map(\.id)
                    }
                }
            } catch {
                await log.close()
                throw UserError(Self.describe(error, events: events))
            }
            await log.close()
            print(ids.map(String.init).joined(separator: "\n"))
        }

        /// A refusal in one line; a failed condition names the topic, the expected id and the topic's last id.
        static func describe(_ error: Error, events: [NewEvent]) -> String {
            let mismatch: (lastID: Int64, index: Int?)?
            switch error {
            case let error as EventLogClientError:
                mismatch = error.expectedLastIDMismatch.map { ($0, error.index) }
            case let error as EventLogError where error.code == .expectedLastIDMismatch:
                mismatch = error.lastID.map { ($0, error.index) }
            default:
                mismatch = nil
            }
            guard let mismatch else { return UserError.describe(error) }
            let event = events.indices.contains(mismatch.index ?? 0) ? events[mismatch.index ?? 0] : nil
            var text = "nothing was published: the last id of \(event?.topic ?? "the topic") is \(mismatch.lastID)"
            if let expected = event?.expectedLastID { text += ", not the expected \(expected)" }
            if events.count > 1, let index = mismatch.index { text += " (event \(index + 1) of the batch)" }
            return text
        }

        private func singleEvent() throws -> NewEvent {
            var text = data ?? "null"
            if text == "-" {
                text = String(decoding: FileHandle.standardInput.readDataToEndOfFile(), as: UTF8.self)
            } else if text.hasPrefix("@") {
                let path = String(text.dropFirst())
                guard let contents = FileManager.default.contents(atPath: path) else {
                    throw UserError("cannot read \(path)")
                }
                text = String(decoding: contents, as: UTF8.self)
            }
            let payload: EventData?
            do {
                payload = try PublishRequest.decodeData(text)
            } catch {
                throw UserError("--data is not JSON (quote text as a JSON string): \(error.message)")
            }
            return NewEvent(
                topic: topic ?? "", type: type ?? "message", key: key, data: payload, idempotencyKey: idempotencyKey,
                expectedLastID: expectLast)
        }

        private func readBatch() throws -> [NewEvent] {
            let input = String(decoding: FileHandle.standardInput.readDataToEndOfFile(), as: UTF8.self)
            var events: [NewEvent] = []
            for (index, line) in input.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
                let trimmed = line.trimmingCharacters(in: .whitespacesAndNewlines)
                if trimmed.isEmpty { continue }
                do {
                    events.append(try PublishRequest.decode(trimmed))
                } catch {
                    throw UserError("stdin line \(index + 1): \(error.message)")
                }
            }
            guard !events.isEmpty else { throw UserError("stdin has no events") }
            return events
        }
    }

    /// `eventlog topics`.
    struct Topics: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "List the topics with their event counts and last ids.")

        @OptionGroup var source: SourceOptions

        @Option(help: "Output format. Default: table on a terminal, jsonl otherwise.")
        var format: TopicsFormat?

        func run() async throws {
            let log = try await source.open()
            let topics: [(String, Int64, Int64)]
            switch log {
            case .database(let database):
                topics = try await database.topics().map { ($0.topic, $0.count, $0.lastID) }
            case .server(let client):
                topics = try await client.topics().map { ($0.topic, $0.count, $0.lastID) }
            }
            await log.close()
            if (format ?? TopicsFormat(OutputFormat.automatic)) == .table {
                let width = max(5, topics.map(\.0.count).max() ?? 5)
                print("topic".padding(toLength: width, withPad: " ", startingAt: 0) + "  count  last_id")
                for (topic, count, last) in topics {
                    print(topic.padding(toLength: width, withPad: " ", startingAt: 0) + "  \(count)  \(last)")
                }
            } else {
                for (topic, count, last) in topics {
                    print(#"{"topic":"\#(topic)","count":\#(count),"lastId":\#(last)}"#)
                }
            }
        }
    }

    /// `eventlog stats`.
    struct Stats: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Print the log's counts, earliest, head, epoch and size on disk.")

        @OptionGroup var source: SourceOptions

        func run() async throws {
            let log = try await source.open()
            var lines: [(String, String)] = []
            switch log {
            case .database(let database):
                let bounds = try await database.refreshBounds()
                let topics = try await database.topics()
                let path = source.databasePath ?? ""
                let size = ["", "-wal", "-shm"].compactMap {
                    (try? FileManager.default.attributesOfItem(atPath: path + $0))?[.size] as? Int
                }.reduce(0, +)
                lines = [
                    ("events", String(topics.reduce(0) { $0 + $1.count })), ("topics", String(topics.count)),
                    ("earliest", String(bounds.earliest)), ("head", String(bounds.head)),
                    ("epoch", database.epoch), ("size_bytes", String(size)),
                ]
            case .server(let client):
                let health = try await client.send(method: "GET", path: "/healthz")
                let object = (try? JSONParser.parse(health.body)) ?? .object([])
                func field(_ name: String) -> String {
                    switch object[name] {
                    case .number(let lexeme)?: return lexeme
                    case .string(let text)?: return text
                    default: return "?"
                    }
                }
                let topics = try await client.topics()
                lines = [
                    ("events", String(topics.reduce(0) { $0 + $1.count })), ("topics", String(topics.count)),
                    ("earliest", field("earliest")), ("head", field("head")), ("epoch", field("epoch")),
                ]
            }
            await log.close()
            for (name, value) in lines { print("\(name) \(value)") }
        }
    }
}
