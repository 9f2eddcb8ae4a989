import Foundation

/// What ``LogMaintenance/export(to:progress:)`` wrote.
public struct ExportReport: Sendable, Hashable {
    /// Event lines written (the header line not counted).
    public var events: Int64
    /// The log's epoch, as written in the header.
    public var epoch: String
    /// The head written in the header.
    public var head: Int64
    /// The smallest retained id, written in the header.
    public var earliest: Int64
}

/// What ``LogMaintenance/importEvents(from:into:keepEpoch:progress:)`` stored.
public struct ImportReport: Sendable, Hashable {
    /// Events stored.
    public var events: Int64
    /// Their smallest and largest id.
    public var ids: ClosedRange<Int64>?
    /// The head of the new log: the exported head (so ids are never handed out twice), or the last id.
    public var head: Int64
    /// The smallest id the new log holds (its head + 1 when it holds none).
    public var earliest: Int64
    /// The epoch of the new log.
    public var epoch: String
    /// True when the epoch came from the export (the resume-token key always does, when the header has it).
    public var keptEpoch: Bool
}

/// The JSON Lines export format, version 1.
///
/// The first line is a header, `{"eventlog":"export","version":1,"epoch":..,"tokenKey":..,"earliest":E,
/// "head":H,"schemaVersion":2,"events":N,"removedThrough":R,"voids":[[A,T],..]}`; then one line per event in id order, `{"id":N,"time":"<RFC 3339>",
/// "topic":..,"type":..,"key":..,"data":<value>,"idempotencyKey":..,"requestHash":N}`, with `key`,
/// `idempotencyKey` and `requestHash` only when set. `data` is a JSON string for text, the stored JSON text
/// itself for JSON data, and `null` for a tombstone, so an import stores every byte as it was.
///
/// `removedThrough` (the largest id retention removed, from any topic) and `voids` (positions a restore skipped)
/// came with schema version 2; an import of an older export takes `earliest - 1` as what was removed. The import
/// keeps the removals as one floor for every selector: a subscriber of the imported log below it gets a `gap`
/// even for a topic that lost nothing, which is safe, where a per-topic copy could be large.
enum ExportFormat {
    static let version = 1

    /// Exports the SQLite log of `connection`.
    static func export(
        _ connection: Connection,
        to output: FileHandle,
        progress: MaintenanceProgressHandler?
    ) throws -> ExportReport {
        // One read transaction: the header and every line describe the same snapshot, while a server appends.
        try connection.transaction(write: false) {
            let header = ExportHeader(
                epoch: try connection.metaValue("epoch") ?? "",
                tokenKey: try connection.metaValue("token_key") ?? "",
                earliest: try SQLiteEventStore.readEarliest(connection),
                head: try SQLiteEventStore.readHead(connection),
                schemaVersion: try connection.scalarInt("PRAGMA user_version") ?? 0,
                events: try connection.scalarInt("SELECT count(*) FROM events") ?? 0,
                removedThrough: try connection.scalarInt("SELECT max(through) FROM removed") ?? 0,
                voids: try SQLiteEventStore.readVoids(connection)
            )
            var writer = ExportWriter(output: output, header: header, progress: progress)
            let statement = try connection.cachedStatement(
                """
                SELECT id, time, topic, type, key, data, data_format, idempotency_key, request_hash
                FROM events ORDER BY id
                """
            )
            defer { statement.reset() }
            while try statement.step() {
                let text = statement.text(5) ?? ""
                try writer.write(
                    ExportedEvent(
                        id: statement.int64(0),
                        time: statement.int64(1),
                        topic: statement.text(2) ?? "",
                        type: statement.text(3) ?? "",
                        key: statement.isNull(4) ? nil : statement.text(4) ?? "",
                        data: statement.isNull(5) ? nil : statement.int64(6) == 1 ? .json(text) : .text(text),
                        idempotencyKey: statement.isNull(7) ? nil : statement.text(7) ?? "",
                        requestHash: statement.isNull(8) ? nil : statement.int64(8)
                    ))
            }
            return try writer.finish()
        }
    }

    /// The header line's fields.
    private struct Header {
        var epoch: String?
        var tokenKey: String?
        var earliest: Int64 = 1
        var head: Int64 = 0
        /// `nil` in exports from before schema version 2.
        var removedThrough: Int64?
        var voids: [(after: Int64, through: Int64)] = []
    }

    /// Imports into the SQLite log of `connection`, which holds an empty log, in one transaction: all or nothing.
    static func importEvents(
        from input: FileHandle,
        into connection: Connection,
        keepEpoch: Bool,
        progress: MaintenanceProgressHandler?
    ) throws -> ImportReport {
        try connection.transaction(write: true) {
            let count = try connection.scalarInt("SELECT count(*) FROM events") ?? 0
            let existingHead = try SQLiteEventStore.readHead(connection)
            guard count == 0 && existingHead == 0 else {
                throw MaintenanceError(
                    .targetNotEmpty,
                    "\(connection.path) already holds a log (\(count) events, head \(existingHead)); "
                        + "import needs a new or empty log"
                )
            }
            let insert = try connection.cachedStatement(
                """
                INSERT INTO events (id, topic, type, key, data, data_format, time, idempotency_key, request_hash)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
                """
            )
            let plan = try read(from: input, keepEpoch: keepEpoch, progress: progress) { event in
                let dataValue: SQLValue
                let format: Int64
                switch event.data {
                case .none: (dataValue, format) = (.null, 0)
                case .text(let text): (dataValue, format) = (.text(text), 0)
                case .json(let text): (dataValue, format) = (.text(text), 1)
                }
                defer { insert.reset() }
                try insert.bind([
                    .int(event.id), .text(event.topic), .text(event.type), event.key.map { .text($0) } ?? .null,
                    dataValue, .int(format), .int(event.time), event.idempotencyKey.map { .text($0) } ?? .null,
                    event.requestHash.map { .int($0) } ?? .null,
                ])
                while try insert.step() {}
            }
            // AUTOINCREMENT raised seq to the largest id stored; the exported head may be above it when retention
            // had deleted the newest events, and ids up to it must never be handed out again.
            try connection.run("DELETE FROM sqlite_sequence WHERE name = 'events'")
            if plan.head > 0 {
                try connection.run("INSERT INTO sqlite_sequence (name, seq) VALUES ('events', ?)", [.int(plan.head)])
            }
            if plan.removedFloor > 0 {
                try connection.run("INSERT INTO removed (selector, through) VALUES ('', ?)", [.int(plan.removedFloor)])
            }
            for void in plan.voids {
                try connection.run(
                    "INSERT OR REPLACE INTO voids (after, through) VALUES (?, ?)",
                    [.int(void.after), .int(void.through)])
            }
            try connection.run(
                "INSERT OR REPLACE INTO meta (name, value) VALUES ('issued', ?)", [.text(String(plan.head))])
            if let epoch = plan.epoch {
                try connection.run("UPDATE meta SET value = ? WHERE name = 'epoch'", [.text(epoch)])
            }
            if let tokenKey = plan.tokenKey {
                try connection.run("UPDATE meta SET value = ? WHERE name = 'token_key'", [.text(tokenKey)])
            }
            return plan.report(
                earliest: try SQLiteEventStore.readEarliest(connection), epoch: try connection.metaValue("epoch") ?? "")
        }
    }

    /// Reads an export, handing each event to `store` in id order, and decides from the header what the importing
    /// store sets besides the events. The checks and the decisions are the same for every store.
    static func read(
        from input: FileHandle,
        keepEpoch: Bool,
        progress: MaintenanceProgressHandler?,
        store: (ExportedEvent) throws -> Void
    ) throws -> ImportPlan {
        var header: Header?
        var lineNumber = 0
        var previousID: Int64 = 0
        var firstID: Int64?
        var imported: Int64 = 0
        var bytesRead: Int64 = 0
        let totalBytes = (try? input.seekToEnd()).map { Int64($0) }
        if totalBytes != nil { try input.seek(toOffset: 0) }
        try forEachLine(of: input) { line, lineBytes in
            lineNumber += 1
            bytesRead += lineBytes
            if line.allSatisfy({ $0 == 0x20 || $0 == 0x09 || $0 == 0x0D }) { return }
            func fail(_ message: String) -> MaintenanceError {
                MaintenanceError(.invalidExport, "line \(lineNumber): \(message)")
            }
            let members: [(String, JSONLine.Value)]
            do {
                members = try JSONLine.parseObject(line)
            } catch let error as JSONLine.SyntaxError {
                throw fail("\(error.message) at byte \(error.offset + 1)")
            }
            let fields = Dictionary(members, uniquingKeysWith: { first, _ in first })
            if imported == 0 && header == nil && fields["eventlog"] != nil {
                header = try parseHeader(fields, fail: fail)
                return
            }
            let event = try parseEvent(members, fields, after: previousID, fail: fail)
            do {
                try store(event)
            } catch let error as MaintenanceError {
                throw error
            } catch let error as SQLiteError {
                throw fail("cannot store event \(event.id): \(error.message)")
            } catch let error as PGError {
                throw fail("cannot store event \(event.id): \(error.message)")
            }
            previousID = event.id
            firstID = firstID ?? event.id
            imported += 1
            if imported % 50_000 == 0 {
                progress?(
                    MaintenanceProgress(
                        phase: "importing",
                        completed: totalBytes == nil ? imported : bytesRead,
                        total: totalBytes,
                        unit: totalBytes == nil ? "events" : "bytes"
                    )
                )
            }
        }
        let head = max(header?.head ?? previousID, previousID)
        let exportedEarliest = header?.earliest ?? 1
        guard exportedEarliest <= head + 1 else {
            throw MaintenanceError(
                .invalidExport, "the header's earliest \(exportedEarliest) is beyond its head \(head) + 1")
        }
        var plan = ImportPlan(events: imported, ids: firstID.map { $0...previousID }, head: head)
        plan.removedFloor = max(0, min(head, header?.removedThrough ?? (exportedEarliest - 1)))
        plan.voids = (header?.voids ?? []).filter { $0.after < $0.through && $0.through <= head }
        if keepEpoch {
            guard let epoch = header?.epoch else {
                throw MaintenanceError(
                    .invalidExport, "keeping the epoch needs the export's header line with its epoch")
            }
            plan.epoch = epoch
        }
        if let tokenKey = header?.tokenKey {
            // The export's key, so that resume tokens from the exported log verify and, under the new epoch,
            // get `reset` rather than `invalid_resume_token`, as after a restore.
            guard [UInt8](hex: tokenKey)?.count == 32 else {
                throw MaintenanceError(.invalidExport, "the header's tokenKey is not 64 hex digits")
            }
            plan.tokenKey = tokenKey
        }
        progress?(MaintenanceProgress(phase: "importing", completed: imported, total: imported, unit: "events"))
        return plan
    }

    /// One event line: every field checked, a missing request hash computed as the server would have.
    private static func parseEvent(
        _ members: [(String, JSONLine.Value)],
        _ fields: [String: JSONLine.Value],
        after previousID: Int64,
        fail: (String) -> MaintenanceError
    ) throws -> ExportedEvent {
        let known: Set<String> = [
            "id", "time", "topic", "type", "key", "data", "idempotencyKey", "requestHash",
        ]
        if let unknown = members.first(where: { !known.contains($0.0) }) {
            throw fail("unknown field \(Topic.quoted(unknown.0))")
        }
        guard case .raw(let idText) = fields["id"], let id = Int64(idText) else {
            throw fail("\"id\" must be an integer")
        }
        guard id > previousID else {
            throw fail("id \(id) is not above the previous id \(previousID); ids must be unique and ascending")
        }
        guard case .string(let topic) = fields["topic"] else { throw fail("\"topic\" must be a string") }
        guard Topic.isValid(topic) else { throw fail("invalid topic \(Topic.quoted(topic))") }
        var type = "message"
        switch fields["type"] {
        case .none: break
        case .string(let text) where !text.isEmpty: type = text
        default: throw fail("\"type\" must be a non-empty string")
        }
        var key: String?
        switch fields["key"] {
        case .none, .null: break
        case .string(let text): key = text
        case .some(let value): throw fail("\"key\" must be a string, not \(value.typeName)")
        }
        let data: EventData?
        switch fields["data"] {
        case .none, .null: data = nil
        case .string(let text): data = .text(text)
        case .raw(let text): data = .json(text)
        }
        let time: Int64
        switch fields["time"] {
        case .string(let text):
            guard let parsed = Timestamp.parseRFC3339(text) else {
                throw fail("\"time\" is not RFC 3339: \(text)")
            }
            time = parsed
        case .raw(let text):
            guard let parsed = Int64(text) else { throw fail("\"time\" must be RFC 3339 or milliseconds") }
            time = parsed
        default:
            throw fail("\"time\" is missing")
        }
        var idempotencyKey: String?
        switch fields["idempotencyKey"] {
        case .none, .null: break
        case .string(let text): idempotencyKey = text
        case .some(let value): throw fail("\"idempotencyKey\" must be a string, not \(value.typeName)")
        }
        var requestHash: Int64?
        switch fields["requestHash"] {
        case .none, .null: break
        case .raw(let text):
            guard let parsed = Int64(text) else { throw fail("\"requestHash\" must be a 64-bit integer") }
            requestHash = parsed
        case .some(let value): throw fail("\"requestHash\" must be an integer, not \(value.typeName)")
        }
        if idempotencyKey != nil && requestHash == nil {
            // What the server would have stored, so a retry of the original request is still recognised.
            requestHash = NewEvent(topic: topic, type: type, key: key, data: data).requestHash
        }
        return ExportedEvent(
            id: id, time: time, topic: topic, type: type, key: key, data: data, idempotencyKey: idempotencyKey,
            requestHash: idempotencyKey == nil ? nil : requestHash)
    }

    private static func parseHeader(
        _ fields: [String: JSONLine.Value],
        fail: (String) -> MaintenanceError
    ) throws -> Header {
        guard fields["eventlog"] == .string("export") else {
            throw fail("the header's \"eventlog\" must be \"export\"")
        }
        guard case .raw(let versionText) = fields["version"], let version = Int(versionText) else {
            throw fail("the header has no \"version\"")
        }
        guard version == Self.version else {
            throw fail("export format version \(version) is not supported (this build reads version \(Self.version))")
        }
        var header = Header()
        if case .string(let epoch) = fields["epoch"] { header.epoch = epoch }
        if case .string(let key) = fields["tokenKey"] { header.tokenKey = key }
        if case .raw(let text) = fields["earliest"] {
            guard let value = Int64(text), value >= 1 else {
                throw fail("the header's \"earliest\" must be an integer >= 1")
            }
            header.earliest = value
        }
        if case .raw(let text) = fields["head"] {
            guard let value = Int64(text), value >= 0 else {
                throw fail("the header's \"head\" must be an integer >= 0")
            }
            header.head = value
        }
        if case .raw(let text) = fields["removedThrough"] {
            guard let value = Int64(text), value >= 0 else {
                throw fail("the header's \"removedThrough\" must be an integer >= 0")
            }
            header.removedThrough = value
        }
        if case .raw(let text) = fields["voids"] {
            // `[[after,through],..]`: integers only, so the digits and separators are the whole grammar.
            let numbers = text.split(whereSeparator: { "[], ".contains($0) }).map { Int64($0) }
            guard numbers.count % 2 == 0, numbers.allSatisfy({ ($0 ?? -1) >= 0 }) else {
                throw fail("the header's \"voids\" must be [[after,through],..] of integers >= 0")
            }
            header.voids = stride(from: 0, to: numbers.count, by: 2).map { (numbers[$0]!, numbers[$0 + 1]!) }
        }
        return header
    }

    /// Calls `body` with each line of `input` (without its LF) and the bytes it took, reading 1 MiB at a time.
    private static func forEachLine(of input: FileHandle, _ body: ([UInt8], Int64) throws -> Void) throws {
        var pending: [UInt8] = []
        while let chunk = try input.read(upToCount: 1 << 20), !chunk.isEmpty {
            pending.append(contentsOf: chunk)
            var start = 0
            while let newline = pending[start...].firstIndex(of: 0x0A) {
                try body(Array(pending[start..<newline]), Int64(newline - start + 1))
                start = newline + 1
            }
            pending.removeFirst(start)
        }
        if !pending.isEmpty { try body(pending, Int64(pending.count)) }
    }
}

/// One event as an export line carries it, whatever store it came from or goes to.
struct ExportedEvent {
    var id: Int64
    /// Commit time, Unix milliseconds.
    var time: Int64
    var topic: String
    var type: String
    var key: String?
    /// `nil` for a tombstone.
    var data: EventData?
    var idempotencyKey: String?
    /// Only with an idempotency key.
    var requestHash: Int64?
}

/// The header line of an export, as a store describes its snapshot.
struct ExportHeader {
    var epoch: String
    var tokenKey: String
    var earliest: Int64
    var head: Int64
    /// The SQLite schema version whose content the export carries (a PostgreSQL log writes its equivalent).
    var schemaVersion: Int64
    /// Events that follow.
    var events: Int64
    /// The largest id retention removed, from any topic (0 when none).
    var removedThrough: Int64
    var voids: [ClosedRange<Int64>]
}

/// Writes the header, then one line per event, 1 MiB at a time: the one encoder of the format, for every store.
struct ExportWriter {
    private let output: FileHandle
    private let progress: MaintenanceProgressHandler?
    private let header: ExportHeader
    private var buffer = ""
    private var written: Int64 = 0

    init(output: FileHandle, header: ExportHeader, progress: MaintenanceProgressHandler?) {
        self.output = output
        self.header = header
        self.progress = progress
        buffer = "{\"eventlog\":\"export\",\"version\":\(ExportFormat.version),\"epoch\":"
        JSONLine.appendString(header.epoch, to: &buffer)
        buffer += ",\"tokenKey\":"
        JSONLine.appendString(header.tokenKey, to: &buffer)
        let voids = header.voids.map { "[\($0.lowerBound - 1),\($0.upperBound)]" }.joined(separator: ",")
        buffer += ",\"earliest\":\(header.earliest),\"head\":\(header.head),\"schemaVersion\":\(header.schemaVersion)"
        buffer += ",\"events\":\(header.events),\"removedThrough\":\(header.removedThrough),\"voids\":[\(voids)]}\n"
    }

    /// Appends the event's line, writing the buffer out once it holds 1 MiB.
    mutating func write(_ event: ExportedEvent) throws {
        buffer += "{\"id\":\(event.id),\"time\":\"\(Timestamp.rfc3339(milliseconds: event.time))\",\"topic\":"
        JSONLine.appendString(event.topic, to: &buffer)
        buffer += ",\"type\":"
        JSONLine.appendString(event.type, to: &buffer)
        if let key = event.key {
            buffer += ",\"key\":"
            JSONLine.appendString(key, to: &buffer)
        }
        buffer += ",\"data\":"
        switch event.data {
        case .none: buffer += "null"
        case .json(let text): buffer += text
        case .text(let text): JSONLine.appendString(text, to: &buffer)
        }
        if let idempotencyKey = event.idempotencyKey {
            buffer += ",\"idempotencyKey\":"
            JSONLine.appendString(idempotencyKey, to: &buffer)
            if let requestHash = event.requestHash { buffer += ",\"requestHash\":\(requestHash)" }
        }
        buffer += "}\n"
        written += 1
        if buffer.utf8.count >= 1 << 20 {
            try output.write(contentsOf: Data(buffer.utf8))
            buffer.removeAll(keepingCapacity: true)
            progress?(MaintenanceProgress(phase: "exporting", completed: written, total: header.events, unit: "events"))
        }
    }

    /// Writes what is left and reports.
    mutating func finish() throws -> ExportReport {
        try output.write(contentsOf: Data(buffer.utf8))
        buffer.removeAll()
        progress?(MaintenanceProgress(phase: "exporting", completed: written, total: header.events, unit: "events"))
        return ExportReport(events: written, epoch: header.epoch, head: header.head, earliest: header.earliest)
    }
}

/// What an import sets besides the events, decided by ``ExportFormat/read(from:keepEpoch:progress:store:)`` from
/// the export alone, so every store imports the same log.
struct ImportPlan {
    /// Events read and stored.
    var events: Int64
    /// Their smallest and largest id.
    var ids: ClosedRange<Int64>?
    /// The head the log gets: the exported head, so ids are never handed out twice.
    var head: Int64
    /// The removal floor (selector `''`) the log gets; 0 for none.
    var removedFloor: Int64 = 0
    /// Voids below the head.
    var voids: [(after: Int64, through: Int64)] = []
    /// The export's epoch, when it is kept.
    var epoch: String?
    /// The export's resume-token key, when the header has one.
    var tokenKey: String?

    func report(earliest: Int64, epoch: String) -> ImportReport {
        ImportReport(
            events: events, ids: ids, head: head, earliest: earliest, epoch: epoch, keptEpoch: self.epoch != nil)
    }
}
