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
        var text = "{"
        for (index, value) in values.enumerated() {
            if index > 0 { text += "," }
            guard let value else {
                text += "NULL"
                continue
            }
            text += "\""
            for character in value.unicodeScalars {
                if character == "\"" || character == "\\" { text += "\\" }
                text.unicodeScalars.append(character)
            }
            text += "\""
        }
        return text + "}"
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
