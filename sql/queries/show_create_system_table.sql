-- `SHOW CREATE TABLE system.<table>` as a ClickHouse server answers it, for the local server
-- (nova_assets/stack/clickhouse_http/system_tables.py): chDB keeps no CREATE statement for its
-- system tables. Columns with their types and comments, the engine, the table's comment; names
-- quoted and strings escaped as ClickHouse's formatter does. No row when there is no such table.
WITH
    (v) -> concat('''', replaceAll(replaceAll(replaceAll(v, '\\', '\\\\'), '''', '\\'''), '\n', '\\n'), '''') AS quoted,
    (
        SELECT arrayStringConcat(groupArray(line), ',\n') FROM (
            SELECT concat('    `', replaceAll(name, '`', '\\`'), '` ', type,
                          if(comment = '', '', concat(' COMMENT ', quoted(comment)))) AS line
            FROM system.columns
            WHERE database = 'system' AND table = {table:String}
            ORDER BY position
        )
    ) AS columns
SELECT concat(
    'CREATE TABLE system.',
    if(match(name, '^[A-Za-z_][A-Za-z0-9_]*$'), name, concat('`', replaceAll(name, '`', '\\`'), '`')),
    '\n(\n', columns, '\n)\nENGINE = ', engine,
    if(comment = '', '', concat('\nCOMMENT ', quoted(comment)))
) AS statement
FROM system.tables
WHERE database = 'system' AND name = {table:String}
