/// SQL pieces the PostgreSQL store, its writer and its maintenance share.
enum PostgresSQL {
    /// The columns ``event(_:_:)`` decodes, in its order.
    static let eventColumns = "id, topic, type, key, data, data_format, time"

    /// The approximate size of an event row, as SQLite's retention counts it (`approximateRowBytesSQL`).
    static func rowBytes(_ table: String = "") -> String {
        let t = table.isEmpty ? "" : table + "."
        return """
            (32 + 2 * octet_length(\(t)topic) + octet_length(\(t)type) + coalesce(octet_length(\(t)key), 0) \
            + coalesce(octet_length(\(t)data), 0) + coalesce(octet_length(\(t)idempotency_key), 0))
            """
    }

    /// The event in row `row` of a result whose first columns are ``eventColumns``.
    static func event(_ result: PGResult, _ row: Int, offset: Int = 0) -> Event {
        let data: EventData?
        if let text = result.text(row, offset + 4) {
            data = result.int64(row, offset + 5) == 1 ? .json(text) : .text(text)
        } else {
            data = nil
        }
        return Event(
            id: result.int64(row, offset),
            topic: result.text(row, offset + 1) ?? "",
            type: result.text(row, offset + 2) ?? "message",
            key: result.text(row, offset + 3),
            data: data,
            time: result.int64(row, offset + 6)
        )
    }

    /// Every event of a result whose first columns are ``eventColumns``.
    static func events(_ result: PGResult) -> [Event] {
        (0..<result.rowCount).map { event(result, $0) }
    }

    /// A condition on `column` that selects what `selectors` select, with parameters numbered from `first`
    /// (`$first`, ...): an exact topic is `=`, a prefix a bytewise range (the columns are `COLLATE "C"`; '0' is
    /// the byte after '/'), `*` is `true`.
    static func condition(
        _ selectors: SelectorSet, column: String = "topic", first: Int
    ) -> (
        sql: String, parameters: [String?]
    ) {
        if selectors.selectors.contains(.all) { return ("true", []) }
        if selectors.isEmpty { return ("false", []) }
        var terms: [String] = []
        var parameters: [String?] = []
        for selector in selectors.selectors {
            switch selector {
            case .topic(let topic):
                terms.append("\(column) = $\(first + parameters.count)")
                parameters.append(topic)
            case .prefix(let prefix):
                let low = first + parameters.count
                terms.append("(\(column) > $\(low) AND \(column) < $\(low + 1))")
                parameters += [prefix + "/", prefix + "0"]
            case .all:
                break
            }
        }
        return ("(" + terms.joined(separator: " OR ") + ")", parameters)
    }

    /// A PostgreSQL array literal of texts (`{"a","b",NULL}`), for a `$n::text[]` parameter.
    static func array(_ values: [String?]) -> String {
        var bytes: [UInt8] = [UInt8(ascii: "{")]
        bytes.reserveCapacity(values.reduce(2) { $0 + ($1?.utf8.count ?? 4) + 3 })
        for (index, value) in values.enumerated() {
            if index > 0 { bytes.append(UInt8(ascii: ",")) }
            guard let value else {
                bytes += "NULL".utf8
                continue
            }
            bytes.append(UInt8(ascii: "\""))
            for byte in value.utf8 {
                if byte == UInt8(ascii: "\"") || byte == UInt8(ascii: "\\") { bytes.append(UInt8(ascii: "\\")) }
                bytes.append(byte)
            }
            bytes.append(UInt8(ascii: "\""))
        }
        bytes.append(UInt8(ascii: "}"))
        return String(decoding: bytes, as: UTF8.self)
    }

    /// An event row as `eventlog.events` stores it.
    struct EventRow {
        let event: Event
        let idempotencyKey: String?
        /// The request hash, stored with an idempotency key only.
        let requestHash: Int64?
    }

    /// `INSERT INTO eventlog.events … SELECT * FROM unnest(…)` with its nine array parameters numbered from
    /// `first`: one statement of the same text for any number of rows (PostgreSQL parses little, whatever the
    /// count), filled by ``insertParameters(_:)``.
    static func insertEvents(firstParameter first: Int) -> String {
        let types = ["bigint", "text", "text", "text", "text", "smallint", "bigint", "text", "bigint"]
        return """
            INSERT INTO eventlog.events (id, topic, type, key, data, data_format, time, idempotency_key, request_hash)
            SELECT * FROM unnest(\(types.enumerated().map { "$\(first + $0.offset)::\($0.element)[]" }.joined(separator: ", ")))
            """
    }

    /// The nine array parameters of ``insertEvents(firstParameter:)`` for `rows`.
    static func insertParameters(_ rows: [EventRow]) -> [String?] {
        let data = rows.map { dataColumns($0.event.data) }
        return [
            array(rows.map { String($0.event.id) }), array(rows.map(\.event.topic)), array(rows.map(\.event.type)),
            array(rows.map(\.event.key)), array(data.map(\.text)), array(data.map(\.format)),
            array(rows.map { String($0.event.time) }), array(rows.map(\.idempotencyKey)),
            array(rows.map { $0.requestHash.map(String.init) }),
        ]
    }

    /// The (format, text) columns of an event's data.
    static func dataColumns(_ data: EventData?) -> (text: String?, format: String) {
        switch data {
        case .none: return (nil, "0")
        case .text(let text): return (text, "0")
        case .json(let text): return (text, "1")
        }
    }
}
