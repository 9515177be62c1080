use pgshift_testkit::{Cluster, PgVersion};

#[tokio::test]
async fn every_version_starts_with_logical_wal_and_stops_on_drop() {
    for version in [PgVersion::V15, PgVersion::V16, PgVersion::V18] {
        let cluster = Cluster::start(version);
        let client = cluster.connect("postgres").await;
        let row = client.query_one("SELECT current_setting('server_version_num')::int, current_setting('wal_level')", &[]).await.unwrap();
        let num: i32 = row.get(0);
        let expected = match version { PgVersion::V15 => 15, PgVersion::V16 => 16, PgVersion::V18 => 18 };
        assert_eq!(num / 10000, expected);
        assert_eq!(row.get::<_, String>(1), "logical");
        let vector = client
            .query_opt("SELECT 1 FROM pg_available_extensions WHERE name = 'vector'", &[])
            .await
            .unwrap();
        assert_eq!(vector.is_some(), version.has_pgvector(), "{version}");
        let port = cluster.port;
        drop(client);
        drop(cluster);
        assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err(), "{version} still listening");
    }
}
