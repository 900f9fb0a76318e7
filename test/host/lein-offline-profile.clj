;; Leiningen profiles for building sample-app offline, resolving every
;; dependency from Debian's /usr/share/maven-repo (populated by the
;; leiningen, libring-jetty-adapter-clojure and libcompojure-clojure
;; packages). Install as ~/.lein/profiles.clj of the building user; the
;; app's project.clj stays an ordinary Clojars/Central project.
;;
;; Why each piece:
;; - :repositories ^:replace drops Central/Clojars: no network lookups.
;;   (:repositories is one of the keys `lein uberjar` keeps when it strips
;;   the :default profiles before collecting jars for the standalone jar.)
;; - No :local-repo: the default ~/.m2/repository is writable by the build
;;   user; artifacts are copied there from the read-only, root-owned
;;   file:///usr/share/maven-repo.
;; - Debian rewrites transitive dependency versions to "debian", and there
;;   is no org.clojure/clojure "debian" artifact, so resolution fails unless
;;   that transitive edge is excluded (the app depends on clojure 1.11.1
;;   directly). `lein uberjar` unmerges :user (but not :uberjar) before
;;   resolving the standalone jar's deps, so the exclusion sits in both.
;;   (Through :user alone the exclusion is lost there, even with ^:leaky.)
;; - lein prints ":repositories detected in user-level profiles!": expected.
{:user {:repositories ^:replace [["debian" {:url "file:///usr/share/maven-repo"
                                              :snapshots false
                                              :checksum :ignore}]]
        :plugin-repositories ^:replace [["debian" {:url "file:///usr/share/maven-repo"
                                                     :snapshots false
                                                     :checksum :ignore}]]
        :exclusions [org.clojure/clojure]}
 :uberjar {:exclusions [org.clojure/clojure]}}
